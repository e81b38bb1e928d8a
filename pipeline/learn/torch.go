package learn

/*
#include <stdint.h>

// gotch's C layer (libtch/torch_api.cpp) defines these, but gotch v0.7.0
// has no Go wrapper for them. Declaring them weak lets this package's own
// cgo link check pass without libtch's object; in a real binary libtch is
// linked in and the strong definitions win.
extern void at_manual_seed(int64_t) __attribute__((weak));
extern void at_set_num_threads(int) __attribute__((weak));
extern int at_get_num_threads(void) __attribute__((weak));

static int hm_manual_seed(int64_t seed) {
	if (!at_manual_seed) return -1;
	at_manual_seed(seed);
	return 0;
}

static int hm_set_num_threads(int n) {
	if (!at_set_num_threads) return -1;
	at_set_num_threads(n);
	return 0;
}

static int hm_get_num_threads(void) {
	if (!at_get_num_threads) return -1;
	return at_get_num_threads();
}
*/
import "C"

import "errors"

var errNoTorchSymbol = errors.New("libtch's C functions are not linked into this binary")

// SeedTorch seeds libtorch's generators (CPU and CUDA), which draw the
// initial weights and the dropout masks. Process-wide; pipeline/detect's
// CNNs seed through it too.
func SeedTorch(seed int64) error {
	if C.hm_manual_seed(C.int64_t(seed)) != 0 {
		return errNoTorchSymbol
	}
	return nil
}

// SetTorchThreads sets libtorch's intra-op thread count, process-wide.
func SetTorchThreads(n int) error {
	if C.hm_set_num_threads(C.int(n)) != 0 {
		return errNoTorchSymbol
	}
	return nil
}

// TorchThreads reports libtorch's intra-op thread count (-1 if unknown).
func TorchThreads() int { return int(C.hm_get_num_threads()) }
