/* edgevit Cortex-M runtime: semihosting I/O, exit, and a SysTick tick counter (ARM builds only).
 *
 * Output goes through ARM semihosting (SYS_WRITE0), which QEMU forwards to its semihosting chardev and
 * a debugger (OpenOCD, pyOCD) to its console. Nothing here uses printf, so newlib's printf stays out of
 * the image. On a board without a debugger attached, a semihosting call is a BKPT that faults: builds
 * meant to run standalone must not call these.
 *
 * Exit codes (SYS_EXIT_EXTENDED; qemu-system-arm exits with this code):
 *   0  main returned 0            1  edgevit_model_run failed (main_arm.c)     2  main's own usage error
 *   3  HardFault (also MemManage/BusFault/UsageFault, which escalate to HardFault unless enabled)
 *   4  any other unexpected exception or interrupt (NMI, SVC, PendSV, DebugMon, IRQs)
 *   5  stack overflow: the stack grew deeper than STACK_SIZE (checked after main returns)
 *   other: main's non-zero return value
 *
 * Timer: ev_timer_start() runs SysTick from the processor clock with the maximal 24-bit reload; its
 * interrupt counts wraps, so ev_timer_ticks() is a 64-bit count of processor-clock ticks since the start.
 * On hardware that is CPU cycles. In QEMU (mps2 boards: SysTick processor clock 25 MHz) under
 * `-icount shift=0` (one instruction = 1 ns of virtual time) every tick is exactly
 * EV_QEMU_INSNS_PER_TICK = 40 executed instructions: an instruction count, deterministic from run to run,
 * not a Cortex-M cycle count (QEMU models no pipeline, caches or wait states; DWT->CYCCNT reads 0).
 */
#ifndef EV_SEMIHOST_H
#define EV_SEMIHOST_H

#include <stdint.h>

#define EV_EXIT_OK 0
#define EV_EXIT_MODEL_FAILED 1
#define EV_EXIT_USAGE 2
#define EV_EXIT_HARDFAULT 3
#define EV_EXIT_UNEXPECTED_IRQ 4
#define EV_EXIT_STACK_OVERFLOW 5

/* Instructions per SysTick tick in QEMU mps2 machines run with `-icount shift=0` (measured:
 * tests/backends/mcu/test_toolchain.py::test_instructions_per_tick). */
#define EV_QEMU_INSNS_PER_TICK 40

/* ---- semihosting --------------------------------------------------------------------------------- */
void ev_sh_write0(const char *s);           /* SYS_WRITE0: print a NUL-terminated string (unbuffered) */
void ev_sh_exit(int code) __attribute__((noreturn)); /* flush, then SYS_EXIT_EXTENDED with `code` */

/* Buffered line output (a small static buffer, flushed on '\n', when full and by ev_sh_flush). */
void ev_sh_puts(const char *s);
void ev_sh_putc(char c);
void ev_sh_put_int(int64_t v);              /* decimal */
void ev_sh_put_uint(uint64_t v);            /* decimal */
void ev_sh_put_hex(const void *bytes, uint32_t n); /* two lowercase hex digits per byte, no separators */
void ev_sh_flush(void);

/* ---- SysTick tick counter ------------------------------------------------------------------------ */
void ev_timer_start(void);                  /* (re)start counting from 0 */
uint64_t ev_timer_ticks(void);              /* processor-clock ticks since ev_timer_start() */

/* ---- stack high-water mark (startup_cortexm.c) ---------------------------------------------------- */
/* The startup code paints the RAM above .bss up to its own frame before main; this returns the bytes
 * below the stack top down to the lowest word written since (the deepest stack use so far, which may
 * exceed STACK_SIZE when the stack overflowed its reservation). */
uint32_t ev_stack_used(void);
uint32_t ev_stack_size(void);               /* STACK_SIZE from the linker script */

#endif /* EV_SEMIHOST_H */
