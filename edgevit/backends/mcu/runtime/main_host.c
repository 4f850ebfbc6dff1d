/* edgevit default host driver: stdin → edgevit_model_run → stdout, raw int8 bytes.
 *
 * Reads inputs of EDGEVIT_MODEL_INPUT_SIZE bytes from stdin until end of file and, for each, writes
 * EDGEVIT_MODEL_OUTPUT_SIZE bytes to stdout (so one process can run a batch). Exit status: 0 on success,
 * 1 when edgevit_model_run fails, 2 when stdin is empty or ends inside an input.
 */
#include <stdint.h>
#include <stdio.h>

#include "model.h"

static int8_t ev_input[EDGEVIT_MODEL_INPUT_SIZE];
static int8_t ev_output[EDGEVIT_MODEL_OUTPUT_SIZE];

int main(void) {
    unsigned long count = 0;
    for (;;) {
        size_t got = fread(ev_input, 1, sizeof ev_input, stdin);
        if (got == 0 && count > 0 && feof(stdin)) break;
        if (got != sizeof ev_input) {
            fprintf(stderr, "edgevit: input %lu: read %lu of %lu bytes from stdin\n", count, (unsigned long)got,
                    (unsigned long)sizeof ev_input);
            return 2;
        }
        int rc = edgevit_model_run(ev_input, ev_output);
        if (rc != 0) {
            fprintf(stderr, "edgevit: input %lu: edgevit_model_run returned %d\n", count, rc);
            return 1;
        }
        if (fwrite(ev_output, 1, sizeof ev_output, stdout) != sizeof ev_output) {
            fprintf(stderr, "edgevit: writing the output failed\n");
            return 1;
        }
        count++;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
