// Counts heap allocations made by this process while counting is on, by interposing
// malloc & co. over glibc's (which remain reachable as __libc_malloc etc.). Used by the
// microbenchmark to prove the forwarding loop allocates nothing per frame.
#include <stdint.h>
void mc_start(void);
uint64_t mc_stop(void);   // allocations since mc_start
