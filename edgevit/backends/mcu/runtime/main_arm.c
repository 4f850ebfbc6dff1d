/* edgevit default Cortex-M driver: runs the model on the inputs of test_input.c and prints, through
 * semihosting, one line per input
 *     out <i> <output bytes as hex>
 *     ticks <i> <SysTick ticks of edgevit_model_run>
 * then "stack <bytes>" (the stack high-water mark) and exits 0 — or 1 after "error <i> <rc>" when
 * edgevit_model_run fails. Ticks are CPU cycles on hardware and EV_QEMU_INSNS_PER_TICK instructions each
 * in QEMU under -icount shift=0 (semihost.h).
 */
#include <stdint.h>

#include "model.h"
#include "semihost.h"
#include "test_input.h"

static int8_t ev_output[EDGEVIT_MODEL_OUTPUT_SIZE];

int main(void) {
    for (uint32_t i = 0; i < (uint32_t)EDGEVIT_TEST_COUNT; i++) {
        ev_timer_start();
        int rc = edgevit_model_run(edgevit_test_inputs[i], ev_output);
        uint64_t ticks = ev_timer_ticks();
        if (rc != 0) {
            ev_sh_puts("error ");
            ev_sh_put_uint(i);
            ev_sh_putc(' ');
            ev_sh_put_int(rc);
            ev_sh_putc('\n');
            return EV_EXIT_MODEL_FAILED;
        }
        ev_sh_puts("out ");
        ev_sh_put_uint(i);
        ev_sh_putc(' ');
        ev_sh_put_hex(ev_output, (uint32_t)sizeof ev_output);
        ev_sh_putc('\n');
        ev_sh_puts("ticks ");
        ev_sh_put_uint(i);
        ev_sh_putc(' ');
        ev_sh_put_uint(ticks);
        ev_sh_putc('\n');
    }
    ev_sh_puts("stack ");
    ev_sh_put_uint(ev_stack_used());
    ev_sh_putc('\n');
    return EV_EXIT_OK;
}
