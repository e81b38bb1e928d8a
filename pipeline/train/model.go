package train

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/schemas"
)

// Models names the models a trainer can fit.
var Models = []string{"rf", "lstm", "blstm"}

// Model is what evaluation needs of a trained classifier: a label per
// packet of each window, and where it ran.
type Model interface {
	Predict(ws []*schemas.Window) ([][]int32, error)
	Save(w io.Writer) error
	Device() string
	Close()
}

// Fit trains the named model (rf, lstm or blstm) on the windows.
func Fit(ctx context.Context, name string, cfg learn.Config, ws []*schemas.Window, numClasses int, progress func(learn.EpochStats), log *slog.Logger) (Model, error) {
	switch name {
	case "lstm", "blstm":
		cfg.Bidirectional = name == "blstm"
		m, err := learn.Train(ctx, cfg, ws, numClasses, progress)
		if err != nil {
			return nil, fmt.Errorf("train %s: %w", name, err)
		}
		return m, nil
	case "rf":
		return trainForest(ctx, cfg.Seed, ws, numClasses, log)
	}
	return nil, fmt.Errorf("model %q: want one of %v", name, Models)
}

// trainForest is filled in when the forest package lands.
func trainForest(ctx context.Context, seed int64, ws []*schemas.Window, numClasses int, log *slog.Logger) (Model, error) {
	return nil, fmt.Errorf("model rf: the Random Forest baseline is not built yet")
}
