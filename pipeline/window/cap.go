package window

import "github.com/homemole/homemole/internal/splitmix"

// CapScore ranks a window for the per-device cap: a dataset capped at k
// keeps, for each device, the k windows of smallest score. The score depends
// on nothing but the seed and the window's ID, which is itself
// deterministic, so which windows a cap keeps does not depend on the order
// sessions were windowed in, nor on restarts: objects are written whole and
// uncapped, and the choice is made when the manifest is assembled.
func CapScore(seed uint64, id string) uint64 {
	// FNV-1a spreads the ID; the SplitMix64 finaliser around it makes
	// nearby IDs (".../17", ".../18") and nearby seeds land far apart.
	h := uint64(14695981039346656037) ^ splitmix.Mix(seed)
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	return splitmix.Mix(h ^ seed)
}
