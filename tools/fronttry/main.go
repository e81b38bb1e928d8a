package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/services/internal/cli"
)

var _ = campaign.DefaultLANNets

func main() {
	cli.Main(func(ctx context.Context, _ *slog.Logger) error { return nil })
	src, err := capture.OpenFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	if _, err := capture.WriteCSV(context.Background(), src, features.HomeConfig{}, os.Stdout); err != nil {
		panic(err)
	}
}
