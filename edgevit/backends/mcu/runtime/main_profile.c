/* edgevit Cortex-M profiling driver: runs the model once on the first input of test_input.c with
 * per-step timing (build with EXTRA_CFLAGS=-DEDGEVIT_PROFILE MAIN=main_profile.c) and prints
 *     step <i> <SysTick ticks at the end of step i, counted from the start of edgevit_model_run>
 *     ticks 0 <total ticks>
 * through semihosting, then exits 0. In QEMU under -icount shift=0 a tick is EV_QEMU_INSNS_PER_TICK
 * instructions (semihost.h); on hardware it is a CPU cycle.
 */
#include <stdint.h>

#include "model.h"
#include "semihost.h"
#include "test_input.h"

static uint64_t ev_step_end[EDGEVIT_MODEL_STEPS];
static int8_t ev_output[EDGEVIT_MODEL_OUTPUT_SIZE];

void edgevit_profile_step(int step) {
    if (step >= 0 && step < EDGEVIT_MODEL_STEPS) ev_step_end[step] = ev_timer_ticks();
}

int main(void) {
    ev_timer_start();
    int rc = edgevit_model_run(edgevit_test_inputs[0], ev_output);
    uint64_t total = ev_timer_ticks();
    if (rc != 0) return EV_EXIT_MODEL_FAILED;
    for (int i = 0; i < EDGEVIT_MODEL_STEPS; i++) {
        ev_sh_puts("step ");
        ev_sh_put_uint((uint64_t)i);
        ev_sh_putc(' ');
        ev_sh_put_uint(ev_step_end[i]);
        ev_sh_putc('\n');
    }
    ev_sh_puts("out 0 ");
    ev_sh_put_hex(ev_output, (uint32_t)sizeof ev_output);
    ev_sh_putc('\n');
    ev_sh_puts("ticks 0 ");
    ev_sh_put_uint(total);
    ev_sh_putc('\n');
    return EV_EXIT_OK;
}
