package learn

/*
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
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

// OpenBLAS is found at run time: libtorch links it on Debian, an MKL
// build has none.
static int hm_set_blas_threads(int n) {
	void (*set)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "openblas_set_num_threads");
	if (!set) return -1;
	set(n);
	return 0;
}

static void hm_tune_malloc(int mmapThreshold, int trimThreshold) {
	mallopt(M_MMAP_THRESHOLD, mmapThreshold);
	mallopt(M_TRIM_THRESHOLD, trimThreshold);
}

// hm_release_native hands every arena's free pages back to the OS, the
// holes between live chunks too, not only a heap's free top.
static int hm_release_native(void) { return malloc_trim(0); }

static int hm_get_num_threads(void) {
	if (!at_get_num_threads) return -1;
	return at_get_num_threads();
}
*/
import "C"

import (
	"errors"
	"sync"
	"time"
)

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

// SetTorchThreads sets libtorch's intra-op thread count for the calling
// OS thread (OpenMP keeps it per thread) and holds OpenBLAS to one thread,
// process-wide: libtorch splits operations over its own threads, and
// OpenBLAS's pthread pool (Debian's libtorch links it, two threads on two
// cores whatever libtorch is told) beside them ran 2 intra-op threads at a
// third of one thread's speed, and two data-parallel copies, whose
// concurrent calls it serialises, at a fifth.
func SetTorchThreads(n int) error {
	if C.hm_set_num_threads(C.int(n)) != 0 {
		return errNoTorchSymbol
	}
	C.hm_set_blas_threads(1)
	return nil
}

// Training's tensors (activations, gradients: a few MiB each) are freed and
// allocated again every step. Above glibc's mmap threshold each is a fresh
// mapping whose unmapping stops every thread of the process; with two
// copies of a model stepping at once that kernel time held their speed-up
// to 1.3x. Below mmapThreshold they come from the heap and are reused;
// trimThreshold bounds what a freed heap keeps from the OS.
const (
	mmapThreshold = 32 << 20
	trimThreshold = 64 << 20
)

// tuneMalloc sets glibc's thresholds for training (process-wide).
func tuneMalloc() { C.hm_tune_malloc(C.int(mmapThreshold), C.int(trimThreshold)) }

// ReleaseNative hands the free memory glibc keeps in its heaps back to
// the OS (malloc_trim). Below mmapThreshold a step's tensors come from the
// heaps, and what they leave free stays resident: a streaming trainer
// under a 256 MiB budget peaked with native memory 54 MiB over its
// baseline on 481 MiB of windows (105 MiB on 1285 MiB), and 25 MiB with a
// release every second (pipeline/train's TestStreamTrainingStaysInBudget).
// Process-wide and safe beside a training step (glibc takes each arena's
// lock); it costs about what the free pages do to unmap.
func ReleaseNative() { C.hm_release_native() }

// StartReleases calls ReleaseNative every interval, when when (nil:
// always) says so, until the returned function is called.
func StartReleases(every time.Duration, when func() bool) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if when == nil || when() {
					ReleaseNative()
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// TorchThreads reports libtorch's intra-op thread count (-1 if unknown).
func TorchThreads() int { return int(C.hm_get_num_threads()) }
