/* mkoptionsdoc.c - prints the README's environment table from the options
 * table in src/options.c, the same table the library reads the environment
 * with.  `make options-doc` (in the build directory) builds it and puts its
 * output into README.md between the table's two marker lines;
 * tests/unit/test_options checks that the README has it. */
#include <unistd.h>

#include "internal.h"

int main(void)
{
    sm_options_write_doc(STDOUT_FILENO);
    return 0;
}
