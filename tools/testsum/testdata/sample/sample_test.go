package sample

import (
	"os"
	"testing"
)

func TestPasses(t *testing.T) { t.Log("a pass's log is not printed") }

func TestSkipsForData(t *testing.T) {
	t.Log("looking for the captures")
	t.Skip("needs the captures: run `go tool task data`")
}

func TestFailsOnDemand(t *testing.T) {
	if os.Getenv("SAMPLE_FAIL") != "" {
		t.Fatal("failed on demand")
	}
}
