package detect

/*
#include <stdint.h>

// gotch's C layer defines these but gotch v0.7.0 wraps neither; declared
// weak so this package's cgo link check passes without libtch's object
// (pipeline/learn does the same: its helpers are unexported).
extern void at_manual_seed(int64_t) __attribute__((weak));
extern void at_set_num_threads(int) __attribute__((weak));

static int hm_detect_manual_seed(int64_t seed) {
	if (!at_manual_seed) return -1;
	at_manual_seed(seed);
	return 0;
}

static int hm_detect_set_num_threads(int n) {
	if (!at_set_num_threads) return -1;
	at_set_num_threads(n);
	return 0;
}
*/
import "C"

import "errors"

var errNoTorchSymbol = errors.New("libtch's C functions are not linked into this binary")

// seedTorch seeds libtorch's generators, which draw the initial weights and
// the dropout masks.
func seedTorch(seed int64) error {
	if C.hm_detect_manual_seed(C.int64_t(seed)) != 0 {
		return errNoTorchSymbol
	}
	return nil
}

func setTorchThreads(n int) error {
	if C.hm_detect_set_num_threads(C.int(n)) != 0 {
		return errNoTorchSymbol
	}
	return nil
}
