package forest

import (
	"sync"

	"github.com/homemole/homemole/schemas"
)

// ClassProbs returns each real packet's mean tree probability of every
// class: out[i] holds ws[i].Len rows of the model's classes, row-major.
// Where trees disagree the winning class's probability is low, which is
// what tells a device the forest never saw from one it knows.
func (m *Model) ClassProbs(ws []*schemas.Window) ([][]float32, error) {
	rows, err := m.encodeTrained("ClassProbs", ws)
	if err != nil {
		return nil, err
	}
	k := m.numClasses
	flat := make([]float32, rows.Len()*k)
	m.sumTrees(rows, func(i int, acc []float32) {
		for c, v := range acc {
			flat[i*k+c] = v / float32(len(m.trees))
		}
	})
	out := make([][]float32, len(ws))
	j := 0
	for i, w := range ws {
		out[i] = flat[j*k : (j+w.Len)*k : (j+w.Len)*k]
		j += w.Len
	}
	return out, nil
}

// sumTrees walks every row down every tree on the model's workers and
// hands each row's summed leaf probabilities to each (acc is reused: each
// must copy what it keeps). Rows go out in chunks, each row to one call.
func (m *Model) sumTrees(r Rows, each func(i int, acc []float32)) {
	n := r.Len()
	const chunk = 4096
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range m.cfg.workers() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			acc := make([]float32, m.numClasses)
			for lo := range jobs {
				for i := lo; i < min(lo+chunk, n); i++ {
					x := r.X[i*r.Cols : (i+1)*r.Cols]
					clear(acc)
					for _, t := range m.trees {
						for _, p := range t.leafProbs(x) {
							acc[p.Class] += p.P
						}
					}
					each(i, acc)
				}
			}
		}()
	}
	for lo := 0; lo < n; lo += chunk {
		jobs <- lo
	}
	close(jobs)
	wg.Wait()
}
