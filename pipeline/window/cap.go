package window

// CapScore ranks a window for the per-device cap: a dataset capped at k
// keeps, for each device, the k windows of smallest score. The score depends
// on nothing but the seed and the window's ID, which is itself
// deterministic, so which windows a cap keeps does not depend on the order
// sessions were windowed in, nor on restarts: objects are written whole and
// uncapped, and the choice is made when the manifest is assembled.
func CapScore(seed uint64, id string) uint64 {
	// FNV-1a spreads the ID; the SplitMix64 finaliser around it makes
	// nearby IDs (".../17", ".../18") and nearby seeds land far apart.
	h := uint64(14695981039346656037) ^ mix64(seed)
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	return mix64(h ^ seed)
}

func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}
