/* elk_strerror: the message for every ELK_* status, from the table generated out of spec.py. */
#include "elk/elk.h"

const char *elk_strerror(int status)
{
    switch (status) {
#define ELK_STATUS_CASE(code, msg) case code: return msg;
        ELK_STATUS_LIST(ELK_STATUS_CASE)
#undef ELK_STATUS_CASE
    default: return "unknown error";
    }
}
