//go:build torch

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// torchCommand is the command itself: this build links libtorch.
func torchCommand(name string) runFunc {
	return map[string]runFunc{
		"demo":       runDemo,
		"train":      runTrain,
		"cv":         runCV,
		"experiment": runExperiment,
		"predict":    runPredict,
		"study":      runStudy,
		"sp":         runSP,
		"detect":     runDetect,
		"home":       runHome,
		"sweep":      runSweep,
	}[name]
}

// writeReports writes a run's JSON summary to jsonOut and its HTML report
// to *htmlOut, which defaults to jsonOut with the extension .html.
func writeReports(jsonOut string, htmlOut *string, js, html func() ([]byte, error)) error {
	b, err := js()
	if err != nil {
		return err
	}
	if err := os.WriteFile(jsonOut, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write the JSON summary: %w", err)
	}
	if *htmlOut == "" {
		*htmlOut = strings.TrimSuffix(jsonOut, filepath.Ext(jsonOut)) + ".html"
	}
	if b, err = html(); err != nil {
		return err
	}
	if err := os.WriteFile(*htmlOut, b, 0o644); err != nil {
		return fmt.Errorf("write the HTML report: %w", err)
	}
	return nil
}
