package capture

import (
	"context"
	"errors"
	"io"

	"github.com/homemole/homemole/pipeline/features"
)

// WriteCSV decodes every frame of src as one tap stream and writes one
// features CSV row per decoded packet to w (see features.CSVWriter), header
// first. It is what `homemole features` runs. Frames the decoder rejects are
// counted in Stats and skipped, as in Read. When the capture turns out
// truncated or corrupt, the rows of the packets before the fault are still
// written out before the error returns, so a person sees how far it got.
func WriteCSV(ctx context.Context, src Source, home features.HomeConfig, w io.Writer) (Stats, error) {
	cw := features.NewCSVWriter(w)
	st, err := Read(ctx, src, home, cw.Write)
	if ferr := cw.Flush(); ferr != nil {
		err = errors.Join(err, ferr)
	}
	return st, err
}
