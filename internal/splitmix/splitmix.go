// Package splitmix holds SplitMix64's finaliser, which the window cap and
// the streaming trainer's stream contexts both use to turn a counter or a
// hash into a well-mixed word.
package splitmix

// Mix is SplitMix64's finaliser: nearby inputs land far apart.
func Mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}
