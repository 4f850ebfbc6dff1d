/* edgevit Cortex-M startup: vector table, Reset_Handler, fault handlers (ARMv7-M/ARMv7E-M: M4, M7).
 *
 * Reset_Handler: enables the FPU (CPACR) when compiled for one (__ARM_FP), paints all RAM above .bss
 * ([__StackPaint, sp)) for the stack high-water mark, copies .data from flash, zeroes .bss, calls main()
 * and exits through semihosting with main's return value — or with EV_EXIT_STACK_OVERFLOW (5) when the
 * stack grew deeper than STACK_SIZE (the lowest written word is below __StackLimit). Faults print one "fault ..." line and exit with EV_EXIT_HARDFAULT
 * (3), so QEMU terminates with that code instead of aborting on a lockup; any other unexpected
 * exception exits with EV_EXIT_UNEXPECTED_IRQ (4). Exit codes are listed in semihost.h.
 *
 * Linker symbols (cortexm.ld.in): __StackTop = end of RAM (the initial SP), __StackLimit = __StackTop −
 * STACK_SIZE, __StackPaint = start of the .stack reservation (just above .bss),
 * __data_load/__data_start/__data_end, __bss_start/__bss_end.
 */
#include <stdint.h>

#include "semihost.h"

extern uint32_t __StackTop, __StackLimit, __StackPaint;
extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end;

int main(void);
void Reset_Handler(void);
void NMI_Handler(void);
void HardFault_Handler(void);
void SysTick_Handler(void); /* semihost.c */
void Default_Handler(void);
void ev_fault_report(const uint32_t *frame);

#define EV_STACK_PAINT 0xA5A5A5A5u
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define SCB_CFSR (*(volatile uint32_t *)0xE000ED28u)
#define SCB_HFSR (*(volatile uint32_t *)0xE000ED2Cu)
#define SCB_MMFAR (*(volatile uint32_t *)0xE000ED34u)
#define SCB_BFAR (*(volatile uint32_t *)0xE000ED38u)

typedef void (*ev_vector_t)(void);

__attribute__((section(".isr_vector"), used)) const ev_vector_t ev_vector_table[16] = {
    (ev_vector_t)(uintptr_t)&__StackTop, /* 0  initial SP */
    Reset_Handler,                       /* 1  reset */
    NMI_Handler,                         /* 2  NMI */
    HardFault_Handler,                   /* 3  HardFault */
    HardFault_Handler,                   /* 4  MemManage (escalates to HardFault unless enabled) */
    HardFault_Handler,                   /* 5  BusFault */
    HardFault_Handler,                   /* 6  UsageFault */
    0, 0, 0, 0,                          /* 7-10 reserved */
    Default_Handler,                     /* 11 SVCall */
    Default_Handler,                     /* 12 DebugMonitor */
    0,                                   /* 13 reserved */
    Default_Handler,                     /* 14 PendSV */
    SysTick_Handler,                     /* 15 SysTick: ev_timer wrap counter */
};

static inline uint32_t ev_get_sp(void) {
    uint32_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

static inline uint32_t ev_get_ipsr(void) {
    uint32_t ipsr;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    return ipsr;
}

void Reset_Handler(void) {
#if defined(__ARM_FP)
    SCB_CPACR |= 0xFu << 20; /* CP10, CP11: full access */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    /* Paint RAM from the .stack reservation up to this function's frame (no interrupt is enabled yet). */
    volatile uint32_t *p = &__StackPaint;
    uint32_t paint_end = ev_get_sp();
    while ((uintptr_t)p < paint_end) *p++ = EV_STACK_PAINT;

    volatile uint32_t *dst = &__data_start;
    const volatile uint32_t *src = &__data_load;
    while (dst < &__data_end) *dst++ = *src++;
    for (dst = &__bss_start; dst < &__bss_end;) *dst++ = 0;

    int rc = main();
    ev_sh_flush();
    if (ev_stack_used() > ev_stack_size()) {
        ev_sh_puts("stack overflow: ");
        ev_sh_put_uint(ev_stack_used());
        ev_sh_puts(" bytes used, STACK_SIZE is ");
        ev_sh_put_uint(ev_stack_size());
        ev_sh_putc('\n');
        ev_sh_exit(EV_EXIT_STACK_OVERFLOW);
    }
    ev_sh_exit(rc);
}

uint32_t ev_stack_size(void) { return (uint32_t)((uintptr_t)&__StackTop - (uintptr_t)&__StackLimit); }

uint32_t ev_stack_used(void) {
    const volatile uint32_t *p = &__StackPaint;
    while (p < &__StackTop && *p == EV_STACK_PAINT) p++;
    return (uint32_t)((uintptr_t)&__StackTop - (uintptr_t)p);
}

static void ev_put_hex32(uint32_t v) {
    uint8_t be[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    ev_sh_puts("0x");
    ev_sh_put_hex(be, 4);
}

/* frame: the stacked r0-r3, r12, lr, pc, xPSR of the faulting context */
void ev_fault_report(const uint32_t *frame) {
    ev_sh_flush();
    ev_sh_puts("\nfault ");
    ev_sh_put_uint(ev_get_ipsr() & 0x1FFu);
    ev_sh_puts(" pc=");
    ev_put_hex32(frame[6]);
    ev_sh_puts(" lr=");
    ev_put_hex32(frame[5]);
    ev_sh_puts(" cfsr=");
    ev_put_hex32(SCB_CFSR);
    ev_sh_puts(" hfsr=");
    ev_put_hex32(SCB_HFSR);
    ev_sh_puts(" bfar=");
    ev_put_hex32(SCB_BFAR);
    ev_sh_puts(" mmfar=");
    ev_put_hex32(SCB_MMFAR);
    ev_sh_putc('\n');
    ev_sh_exit(EV_EXIT_HARDFAULT);
}

/* Pass the stacked frame (MSP or PSP, from EXC_RETURN bit 2) to ev_fault_report. */
__attribute__((naked)) void HardFault_Handler(void) {
    __asm__ volatile(
        "movs r1, #4\n\t"
        "mov r2, lr\n\t"
        "tst r2, r1\n\t"
        "beq 1f\n\t"
        "mrs r0, psp\n\t"
        "b ev_fault_report\n"
        "1:\n\t"
        "mrs r0, msp\n\t"
        "b ev_fault_report\n");
}

void NMI_Handler(void) { Default_Handler(); }

void Default_Handler(void) {
    ev_sh_flush();
    ev_sh_puts("\nunexpected exception ");
    ev_sh_put_uint(ev_get_ipsr() & 0x1FFu);
    ev_sh_putc('\n');
    ev_sh_exit(EV_EXIT_UNEXPECTED_IRQ);
}
