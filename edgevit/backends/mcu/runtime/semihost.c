/* edgevit Cortex-M runtime: semihosting output/exit and the SysTick tick counter (see semihost.h). */
#include "semihost.h"

#define SYS_WRITE0 0x04
#define SYS_EXIT_EXTENDED 0x20
#define ADP_STOPPED_APPLICATION_EXIT 0x20026

static inline uint32_t ev_semihost_call(uint32_t op, const void *arg) {
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void ev_sh_write0(const char *s) { (void)ev_semihost_call(SYS_WRITE0, s); }

void ev_sh_exit(int code) {
    static volatile uint32_t block[2];
    ev_sh_flush();
    block[0] = ADP_STOPPED_APPLICATION_EXIT;
    block[1] = (uint32_t)code;
    for (;;) (void)ev_semihost_call(SYS_EXIT_EXTENDED, (const void *)block);
}

/* ---- buffered output ------------------------------------------------------------------------------ */
static char ev_sh_buf[257];
static uint32_t ev_sh_len;

void ev_sh_flush(void) {
    if (ev_sh_len == 0) return;
    ev_sh_buf[ev_sh_len] = '\0';
    ev_sh_write0(ev_sh_buf);
    ev_sh_len = 0;
}

void ev_sh_putc(char c) {
    ev_sh_buf[ev_sh_len++] = c;
    if (c == '\n' || ev_sh_len == sizeof ev_sh_buf - 1) ev_sh_flush();
}

void ev_sh_puts(const char *s) {
    while (*s) ev_sh_putc(*s++);
}

void ev_sh_put_uint(uint64_t v) {
    char digits[21];
    int n = 0;
    do {
        digits[n++] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v);
    while (n) ev_sh_putc(digits[--n]);
}

void ev_sh_put_int(int64_t v) {
    if (v < 0) {
        ev_sh_putc('-');
        ev_sh_put_uint((uint64_t)0 - (uint64_t)v);
    } else {
        ev_sh_put_uint((uint64_t)v);
    }
}

void ev_sh_put_hex(const void *bytes, uint32_t n) {
    static const char hex[] = "0123456789abcdef";
    const uint8_t *p = (const uint8_t *)bytes;
    for (uint32_t i = 0; i < n; i++) {
        ev_sh_putc(hex[p[i] >> 4]);
        ev_sh_putc(hex[p[i] & 15u]);
    }
}

/* ---- SysTick ---------------------------------------------------------------------------------------- */
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_RELOAD 0x00FFFFFFu

static volatile uint32_t ev_systick_wraps;
static uint64_t ev_timer_base;
static int ev_timer_running;

void SysTick_Handler(void) { ev_systick_wraps++; }

/* Ticks since SysTick was enabled. The counter counts RELOAD, RELOAD-1, ..., 0 and the 1 -> 0 step
 * pends the wrap interrupt; the reload to RELOAD on the following tick starts the next period. */
static uint64_t ev_timer_raw(void) {
    uint32_t wraps, value;
    do {                     /* re-read if the wrap interrupt ran between the two reads */
        wraps = ev_systick_wraps;
        value = SYST_CVR;
    } while (wraps != ev_systick_wraps);
    return (uint64_t)wraps * (SYST_RELOAD + 1u) + (SYST_RELOAD - value);
}

void ev_timer_start(void) {
    if (!ev_timer_running) {
        SYST_CSR = 0;
        SYST_RVR = SYST_RELOAD;
        SYST_CVR = 0;        /* any write clears the counter; it loads RELOAD on the next tick */
        ev_systick_wraps = 0;
        SYST_CSR = 7u;       /* CLKSOURCE = processor clock, TICKINT, ENABLE */
        for (uint32_t i = 0; i < 100000u && SYST_CVR == 0; i++) {
        } /* wait for that first reload so ev_timer_raw() is monotonic */
        ev_timer_running = 1;
    }
    ev_timer_base = ev_timer_raw();
}

uint64_t ev_timer_ticks(void) { return ev_timer_raw() - ev_timer_base; }
