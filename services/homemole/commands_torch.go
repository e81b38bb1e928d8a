//go:build torch

package main

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
	}[name]
}

// torchExit is never returned by this build; main checks for it in both.
type torchExit struct{ code int }

func (e *torchExit) Error() string { return "" }
