package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// sample runs go test -json on the module in testdata/sample, a real test
// binary, and returns testsum's summary and printed output.
func sample(t *testing.T, fail bool) (*summary, string) {
	t.Helper()
	cmd := exec.Command("go", "test", "-count=1", "-json", ".")
	cmd.Dir = "testdata/sample"
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	if fail {
		cmd.Env = append(cmd.Env, "SAMPLE_FAIL=1")
	}
	js, err := cmd.Output()
	if err != nil && !fail {
		t.Fatalf("go test -json on testdata/sample: %v", err)
	}
	var out bytes.Buffer
	s, err := run(bytes.NewReader(js), &out)
	if err != nil {
		t.Fatal(err)
	}
	printSkips(&out, s.skipped)
	return s, out.String()
}

func TestNamesSkippedTestsWithTheirReason(t *testing.T) {
	s, out := sample(t, false)
	if s.failed {
		t.Fatalf("a passing run was judged failed:\n%s", out)
	}
	if len(s.skipped) != 1 || s.skipped[0].test != "TestSkipsForData" {
		t.Fatalf("skipped = %+v, want TestSkipsForData alone", s.skipped)
	}
	if got, want := s.skipped[0].reason, "needs the captures: run `go tool task data`"; got != want {
		t.Errorf("reason = %q, want %q", got, want)
	}
	if !strings.Contains(out, "1 tests skipped") || !strings.Contains(out, "sample.TestSkipsForData") {
		t.Errorf("summary does not name the skipped test:\n%s", out)
	}
	if !strings.Contains(out, "ok  \texample.com/sample") {
		t.Errorf("go test's ok line is missing:\n%s", out)
	}
	if strings.Contains(out, "a pass's log") {
		t.Errorf("a passing test's log was printed:\n%s", out)
	}
}

func TestPrintsAFailuresOutput(t *testing.T) {
	s, out := sample(t, true)
	if !s.failed {
		t.Fatalf("a failing run was judged passed:\n%s", out)
	}
	if !strings.Contains(out, "failed on demand") || !strings.Contains(out, "--- FAIL: TestFailsOnDemand") {
		t.Errorf("the failing test's output is missing:\n%s", out)
	}
}

func TestCutShortInputFails(t *testing.T) {
	in := `{"Action":"run","Package":"p","Test":"TestLong"}` + "\n" +
		`{"Action":"output","Package":"p","Test":"TestLong","Output":"=== RUN   TestLong\n"}` + "\n"
	s, err := run(strings.NewReader(in), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !s.running["p TestLong"] {
		t.Errorf("a test that never ended is not reported as running: %+v", s.running)
	}
}
