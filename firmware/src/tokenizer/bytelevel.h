/* Byte-level (GPT-2 style) BPE helpers for tokenizer.c: GPT-2's byte <-> character map and its
 * pre-tokenizer (split pattern), scanned by hand. Internal to the tokenizer module; the Python
 * reference is host/elk/convert/bytelevel.py. Not here: merging (tokenizer.c). */
#ifndef ELK_TOKENIZER_BYTELEVEL_H
#define ELK_TOKENIZER_BYTELEVEL_H

#include <stdint.h>

/* Code point GPT-2 spells byte b with (b itself for printable Latin-1, else U+0100 + k). */
uint32_t elk_bl_byte_char(uint8_t b);
/* The byte a code point of that map stands for, or -1. */
int elk_bl_char_byte(uint32_t cp);
/* End of the pre-token of GPT-2's pattern that starts at p[i] (i < n). */
uint64_t elk_bl_next(const uint8_t *p, uint64_t n, uint64_t i);
/* End of the pre-token of Llama 3's pattern that starts at p[i] (i < n):
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
uint64_t elk_bl_next_llama3(const uint8_t *p, uint64_t n, uint64_t i);
/* End of the digit segment at p[i] (i < n): one number character, or the run up to the next one. */
uint64_t elk_bl_digit_segment(const uint8_t *p, uint64_t n, uint64_t i);

/* The bytes the byte-level piece s[0..n) spells (each character of the map is one byte; other
 * characters are dropped) into buf[0..cap); *len = their count. 0, or ELK_E_RANGE when cap is short. */
int elk_bl_piece_bytes(const uint8_t *s, uint32_t n, char *buf, int cap, int *len);

#endif
