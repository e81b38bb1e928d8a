package seqprofile

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
)

// Profile is a sequence profile: an abstracted packet sequence with its
// occurrence count N(S) and importance V(S).
type Profile struct {
	Elems []Vector
	// Count is N(S): how many burst pairs produced exactly this SP.
	Count int
	// Importance is V(S) = sqrt(N(S)) * (non-Any fields over all elements), eq. 6-7.
	Importance float64
}

// Key is a canonical text form of the elements: equal SPs have equal keys.
func (p *Profile) Key() string { return keyOf(p.Elems) }

func keyOf(elems []Vector) string {
	var b strings.Builder
	for i, e := range elems {
		if i > 0 {
			b.WriteByte('|')
		}
		for k, x := range e {
			if k > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Itoa(int(x)))
		}
	}
	return b.String()
}

func (p *Profile) String() string {
	parts := make([]string, len(p.Elems))
	for i, e := range p.Elems {
		parts[i] = e.String()
	}
	return fmt.Sprintf("N=%d V=%.1f [%s]", p.Count, p.Importance, strings.Join(parts, " "))
}

// GenConfig bounds SP generation.
type GenConfig struct {
	Distance Distance
	// MaxProfiles is the paper's "maximum SP number" (10).
	MaxProfiles int
	// MaxBursts bounds the pairwise work: with more bursts, this many are
	// drawn at random (seeded), so a device costs at most
	// MaxBursts*(MaxBursts-1)/2 LCS runs however long it was captured.
	// 160 bursts are 12,720 pairs; the heartbeat and keepalive bursts that
	// make good SPs repeat, so a sample of them finds the same SPs.
	MaxBursts int
	// MaxBurstLen keeps the first packets of longer bursts, so one LCS costs
	// at most MaxBurstLen^2 distance computations. A burst's opening
	// (handshake, request, first response) is what repeats; the bulk of a
	// video or a download is neither regular nor short.
	MaxBurstLen int
	// MinLen drops shorter SPs: a single packet is too common (a bare ACK of
	// the device's stack) unless it is all a device's bursts share.
	MinLen int
	Seed   uint64
}

// DefaultGenConfig is what homemole sp train uses.
func DefaultGenConfig() GenConfig {
	return GenConfig{Distance: DefaultDistance(), MaxProfiles: 10, MaxBursts: 160, MaxBurstLen: 32, MinLen: 1, Seed: 1}
}

// LCS is eq. 4: the longest common subsequence of two bursts under the
// distance threshold, its elements abstracted by eq. 5. Like the paper's
// recurrence it takes the diagonal whenever the two vectors are close.
func LCS(a, b Burst, dist *Distance) []Vector {
	return lcs(a, b, dist, nil)
}

// lcs reuses buf (len >= (len(a)+1)*(len(b)+1)) for the length table.
func lcs(a, b Burst, dist *Distance, buf []int32) []Vector {
	n, m := len(a), len(b)
	if n == 0 || m == 0 {
		return nil
	}
	w := m + 1
	if cap(buf) < (n+1)*w {
		buf = make([]int32, (n+1)*w)
	}
	L := buf[:(n+1)*w]
	clear(L[:w])
	for i := 1; i <= n; i++ {
		L[i*w] = 0
		for j := 1; j <= m; j++ {
			if dist.Of(a[i-1], b[j-1]) < dist.Threshold {
				L[i*w+j] = L[(i-1)*w+j-1] + 1
			} else {
				L[i*w+j] = max(L[i*w+j-1], L[(i-1)*w+j])
			}
		}
	}
	k := int(L[n*w+m])
	if k == 0 {
		return nil
	}
	out := make([]Vector, k)
	i, j := n, m
	for k > 0 {
		switch {
		case L[i*w+j] == L[(i-1)*w+j-1]+1 && dist.Of(a[i-1], b[j-1]) < dist.Threshold:
			k--
			out[k] = Abstract(a[i-1], b[j-1])
			i, j = i-1, j-1
		case L[(i-1)*w+j] >= L[i*w+j-1]:
			i--
		default:
			j--
		}
	}
	return out
}

// GenStats says how much work a Generate call did, for reports.
type GenStats struct {
	Bursts, SampledBursts, Pairs, DistinctSPs int
}

// Generate derives SPs from a device's bursts: one LCS per pair of
// (sampled, capped) bursts, identical SPs counted, ranked by importance,
// the best MaxProfiles kept. Ties rank the more frequent, then the longer,
// then by key, so the result does not depend on map order.
func Generate(bursts []Burst, cfg GenConfig) ([]Profile, GenStats, error) {
	if err := cfg.Distance.Validate(); err != nil {
		return nil, GenStats{}, err
	}
	if cfg.MaxProfiles <= 0 || cfg.MaxBursts < 2 || cfg.MaxBurstLen <= 0 {
		return nil, GenStats{}, fmt.Errorf("sequence profiles: max profiles %d, max bursts %d, max burst length %d: want >= 1, >= 2, >= 1",
			cfg.MaxProfiles, cfg.MaxBursts, cfg.MaxBurstLen)
	}
	st := GenStats{Bursts: len(bursts)}
	sample := bursts
	if len(sample) > cfg.MaxBursts {
		rng := rand.New(rand.NewPCG(cfg.Seed, 0x5e9))
		idx := rng.Perm(len(bursts))[:cfg.MaxBursts]
		slices.Sort(idx) // keep time order: it makes runs reproducible to read
		sample = make([]Burst, len(idx))
		for i, x := range idx {
			sample[i] = bursts[x]
		}
	}
	capped := make([]Burst, len(sample))
	for i, b := range sample {
		capped[i] = b[:min(len(b), cfg.MaxBurstLen)]
	}
	st.SampledBursts = len(capped)
	type agg struct {
		elems []Vector
		n     int
	}
	seen := map[string]*agg{}
	buf := make([]int32, (cfg.MaxBurstLen+1)*(cfg.MaxBurstLen+1))
	for i := range capped {
		for j := i + 1; j < len(capped); j++ {
			st.Pairs++
			s := lcs(capped[i], capped[j], &cfg.Distance, buf)
			if len(s) < max(1, cfg.MinLen) {
				continue
			}
			k := keyOf(s)
			if a, ok := seen[k]; ok {
				a.n++
			} else {
				seen[k] = &agg{elems: s, n: 1}
			}
		}
	}
	st.DistinctSPs = len(seen)
	all := make([]Profile, 0, len(seen))
	for _, a := range seen {
		p := Profile{Elems: a.elems, Count: a.n}
		p.Importance = Importance(p.Elems, p.Count)
		all = append(all, p)
	}
	slices.SortFunc(all, func(x, y Profile) int {
		if c := cmp.Compare(y.Importance, x.Importance); c != 0 {
			return c
		}
		if c := cmp.Compare(y.Count, x.Count); c != 0 {
			return c
		}
		if c := cmp.Compare(len(y.Elems), len(x.Elems)); c != 0 {
			return c
		}
		return strings.Compare(x.Key(), y.Key())
	})
	if len(all) > cfg.MaxProfiles {
		all = all[:cfg.MaxProfiles]
	}
	return all, st, nil
}

// Importance is eq. 6.
func Importance(elems []Vector, n int) float64 {
	fields := 0
	for _, e := range elems {
		fields += e.NonAny()
	}
	return math.Sqrt(float64(n)) * float64(fields)
}

// Coverage is the share of packets that take part in a match of at least
// one of the profiles (the paper's "SP coverage", Fig. 9), computed on
// bursts as the LCS generation sees them: a packet is covered when it is
// one of the matched packets of an SP matched greedily, in order, within
// its burst.
func Coverage(bursts []Burst, profiles []Profile) float64 {
	total, covered := 0, 0
	for _, b := range bursts {
		total += len(b)
		used := make([]bool, len(b))
		for _, p := range profiles {
			// Greedy in-order matches, repeated while the SP keeps matching.
			start := 0
			for {
				idx := make([]int, 0, len(p.Elems))
				e := 0
				for i := start; i < len(b) && e < len(p.Elems); i++ {
					if p.Elems[e].Matches(b[i]) {
						idx = append(idx, i)
						e++
					}
				}
				if e < len(p.Elems) {
					break
				}
				for _, i := range idx {
					used[i] = true
				}
				start = idx[len(idx)-1] + 1
			}
		}
		for _, u := range used {
			if u {
				covered++
			}
		}
	}
	if total == 0 {
		return 0
	}
	return float64(covered) / float64(total)
}
