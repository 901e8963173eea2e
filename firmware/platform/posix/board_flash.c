/* Flash device backed by a file: mapped shared, so every programmed byte is in the page cache the
 * moment it is written and survives the firmware being killed (the power-loss test). Erased bytes
 * read 0xFF as on NOR/NAND; a new file reads 0x00, which no boot record or image accepts. */
#define _DEFAULT_SOURCE /* flock */
#define _FILE_OFFSET_BITS 64 /* flash files beyond 2 GiB on 32-bit boards */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "board_posix.h"
#include "elk/spec.h"

int posix_flash_open(posix_flash *f, const char *path, uint64_t size, char *err, int cap)
{
    if (size > (uint64_t)SIZE_MAX / 2) {  /* the whole flash is mapped: it must fit the address space */
        snprintf(err, (size_t)cap, "%llu MiB of flash cannot be mapped by this 32-bit build (use --flash-mb)",
                 (unsigned long long)(size >> 20));
        return ELK_E_RANGE;
    }
    f->fd = open(path, O_RDWR | O_CREAT, 0644);
    if (f->fd < 0) {
        snprintf(err, (size_t)cap, "%s: %s", path, strerror(errno));
        return ELK_E_IO;
    }
    if (flock(f->fd, LOCK_EX | LOCK_NB) != 0) {  /* two boards on one flash chip would corrupt it */
        snprintf(err, (size_t)cap, "%s: flash file in use by another elk-fw", path);
        close(f->fd);
        return ELK_E_IO;
    }
    struct stat st;
    if (fstat(f->fd, &st) != 0 || ((uint64_t)st.st_size < size && ftruncate(f->fd, (off_t)size) != 0)) {
        snprintf(err, (size_t)cap, "%s: cannot size to %llu bytes: %s", path, (unsigned long long)size,
                 strerror(errno));
        close(f->fd);
        return ELK_E_IO;
    }
    void *m = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd, 0);
    if (m == MAP_FAILED) {
        snprintf(err, (size_t)cap, "%s: cannot map %llu bytes: %s", path, (unsigned long long)size,
                 strerror(errno));
        close(f->fd);
        return ELK_E_IO;
    }
#ifdef MADV_HUGEPAGE
    (void)madvise(m, (size_t)size, MADV_HUGEPAGE);  /* weights run in place: 2 MiB folios, see host_api.c */
#endif
    f->map = m;
    f->size = size;
    return ELK_OK;
}

int posix_flash_erase(void *ctx, uint64_t off, uint64_t len)
{
    posix_flash *f = ctx;
    if (off > f->size || len > f->size - off)
        return ELK_E_BOUNDS;
    memset(f->map + off, 0xFF, (size_t)len);
    return ELK_OK;
}

int posix_flash_write(void *ctx, uint64_t off, const void *data, uint64_t len)
{
    posix_flash *f = ctx;
    if (off > f->size || len > f->size - off)
        return ELK_E_BOUNDS;
    memcpy(f->map + off, data, (size_t)len);
    return ELK_OK;
}

int posix_flash_sync(void *ctx)
{
    posix_flash *f = ctx;
    /* Killing the process keeps the page cache; msync is for a real power cut on a Linux board. */
    return msync(f->map, (size_t)f->size, MS_SYNC) == 0 ? ELK_OK : ELK_E_IO;
}
