package capture

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/homemole/homemole/pipeline/features"
)

// InferHome reads a whole capture file once and infers its home side (see
// features.HomeInference). A capture cut short still yields what its
// readable part says, with the error.
func InferHome(ctx context.Context, path string) (features.InferredHome, error) {
	src, err := OpenFile(path)
	if err != nil {
		return features.InferredHome{}, err
	}
	defer src.Close()
	return InferSource(ctx, src, path)
}

// InferSource is InferHome on an open source, read to its end; name names
// it in errors.
func InferSource(ctx context.Context, src Source, name string) (features.InferredHome, error) {
	h := features.NewHomeInference()
	for n := 0; ; n++ {
		if n%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return h.Result(), fmt.Errorf("infer the home side of %s: %w", name, err)
			}
		}
		f, err := src.Next()
		if errors.Is(err, io.EOF) {
			return h.Result(), nil
		}
		if err != nil {
			return h.Result(), fmt.Errorf("infer the home side of %s: %w", name, err)
		}
		h.Observe(f.LinkType, f.Data)
	}
}
