// Package testjson reads the stream `go test -json` writes (test2json) for
// the tools that summarise it.
package testjson

import (
	"bufio"
	"encoding/json"
	"io"
)

// Event is what test2json writes per line.
type Event struct {
	Action     string
	Package    string
	ImportPath string // build-output and build-fail events name the package here
	Test       string
	Output     string
}

// Read calls event for each event of r, in order, and text for each line
// that is not one: go vet, the linker and build errors write plain text
// before any event. A line longer than maxLine bytes is an error.
func Read(r io.Reader, maxLine int, event func(Event), text func(line string)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, min(1<<20, maxLine)), maxLine)
	for sc.Scan() {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Action == "" {
			text(sc.Text())
			continue
		}
		event(e)
	}
	return sc.Err()
}
