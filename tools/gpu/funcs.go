package main

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// cfunc is one top-level function definition of a C++ file: text[start:end]
// is all of it, from the first character of its signature to its closing
// brace; text[open] is the body's opening brace.
type cfunc struct {
	name             string
	start, open, end int
	void             bool // returns nothing: the stub may not `return {}`
}

// nameRe finds the function name: the last identifier before the
// parameter list's opening parenthesis.
var nameRe = regexp.MustCompile(`([A-Za-z_]\w*)\s*\($`)

// topLevelFuncs splits C++ source into its top-level function definitions.
// It knows no C++ grammar beyond what gotch's C layer is written in:
// comments, string and character literals, preprocessor lines, brace depth.
// A brace at depth 0 after a parenthesised parameter list opens a function;
// any other top-level brace (a namespace, an extern "C" block, a struct)
// is rejected, since nothing in libtch has one outside its headers.
func topLevelFuncs(text string) ([]cfunc, error) {
	var fs []cfunc
	depth := 0
	stmtStart := 0 // where the current top-level declaration began
	cur := cfunc{}
	lineStart := true
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case c == '\n':
			lineStart = true
			continue
		case lineStart && c == '#' && depth == 0:
			// A preprocessor line, continued by trailing backslashes.
			for i < len(text) && !(text[i] == '\n' && text[i-1] != '\\') {
				i++
			}
			stmtStart = i + 1
			continue
		case c == ' ' || c == '\t' || c == '\r':
			continue
		}
		lineStart = false
		switch {
		case c == '/' && i+1 < len(text) && text[i+1] == '/':
			for i < len(text) && text[i] != '\n' {
				i++
			}
			lineStart = true
			if depth == 0 {
				stmtStart = i + 1
			}
		case c == '/' && i+1 < len(text) && text[i+1] == '*':
			j := strings.Index(text[i+2:], "*/")
			if j < 0 {
				return nil, fmt.Errorf("comment at byte %d never ends", i)
			}
			i += j + 3
			if depth == 0 {
				stmtStart = i + 1
			}
		case c == '"' || c == '\'':
			j, err := skipLiteral(text, i)
			if err != nil {
				return nil, err
			}
			i = j
		case c == '{':
			if depth == 0 {
				sig := strings.TrimSpace(text[stmtStart:i])
				p := strings.IndexByte(sig, '(')
				if p < 0 || strings.LastIndexByte(sig, ')') < p {
					return nil, fmt.Errorf("line %d: a top-level brace that does not open a function (%q)", lineOf(text, i), firstLine(sig))
				}
				m := nameRe.FindStringSubmatch(sig[:p+1])
				if m == nil {
					return nil, fmt.Errorf("line %d: no function name before %q", lineOf(text, i), firstLine(sig))
				}
				cur = cfunc{name: m[1], start: stmtStart + strings.Index(text[stmtStart:], sig), open: i, void: returnsVoid(sig[:p])}
				for cur.start < i && (text[cur.start] == ' ' || text[cur.start] == '\n') {
					cur.start++
				}
			}
			depth++
		case c == '}':
			depth--
			if depth < 0 {
				return nil, fmt.Errorf("line %d: unbalanced closing brace", lineOf(text, i))
			}
			if depth == 0 {
				cur.end = i + 1
				fs = append(fs, cur)
				stmtStart = i + 1
			}
		case c == ';' && depth == 0:
			stmtStart = i + 1
		}
	}
	if depth != 0 {
		return nil, errors.New("the file ends inside a function body")
	}
	return fs, nil
}

// skipLiteral returns the index of the quote that closes the literal
// opening at i.
func skipLiteral(text string, i int) (int, error) {
	q := text[i]
	for j := i + 1; j < len(text); j++ {
		switch text[j] {
		case '\\':
			j++
		case q:
			return j, nil
		case '\n':
			return 0, fmt.Errorf("line %d: literal not closed on its line", lineOf(text, i))
		}
	}
	return 0, fmt.Errorf("line %d: literal never closed", lineOf(text, i))
}

// returnsVoid reads a signature's part before the parameter list.
func returnsVoid(head string) bool {
	head = strings.TrimSpace(head)
	if strings.HasPrefix(head, "template") {
		if k := strings.IndexByte(head, '>'); k >= 0 {
			head = strings.TrimSpace(head[k+1:])
		}
	}
	for _, q := range []string{"static ", "inline ", "extern \"C\" "} {
		head = strings.TrimPrefix(head, q)
	}
	return strings.HasPrefix(head, "void ") && !strings.Contains(head, "*")
}

func lineOf(text string, i int) int { return strings.Count(text[:min(i, len(text))], "\n") + 1 }

func firstLine(s string) string {
	if k := strings.IndexByte(s, '\n'); k >= 0 {
		return s[:k] + " ..."
	}
	return s
}

// stubMarker tags stubbed bodies, so a function that still fails after
// being stubbed is recognised instead of being stubbed forever.
const stubMarker = "homemole: stubbed by tools/gpu"

// stubFuncs replaces the body of every function holding one of the 1-based
// lines with one that records an error for gotch to return (gotch reads
// torch_last_err after each call) and returns a zero value. A blamed line
// outside every function cannot be fixed this way and is an error.
func stubFuncs(text string, lines map[int]bool, torchVersion string) (string, []string, error) {
	fs, err := topLevelFuncs(text)
	if err != nil {
		return "", nil, err
	}
	hit := map[int]bool{}
	for ln := range lines {
		found := false
		for k, f := range fs {
			if lineOf(text, f.start) <= ln && ln <= lineOf(text, f.end-1) {
				hit[k], found = true, true
				break
			}
		}
		if !found {
			return "", nil, fmt.Errorf("a compile error at line %d is outside every function, which stubbing cannot fix", ln)
		}
	}
	var b strings.Builder
	var names []string
	prev := 0
	for k, f := range fs {
		if !hit[k] {
			continue
		}
		if strings.Contains(text[f.open:f.end], stubMarker) {
			return "", nil, fmt.Errorf("%s still fails to compile after being stubbed; its signature uses what this libtorch lacks", f.name)
		}
		ret := "\n  return {};"
		if f.void {
			ret = ""
		}
		b.WriteString(text[prev:f.open])
		fmt.Fprintf(&b, "{\n  // %s: it does not compile against libtorch %s.\n  torch_last_err = strdup(\"%s is not available in this libtorch (%s); %s\");%s\n}",
			stubMarker, torchVersion, f.name, torchVersion, stubMarker, ret)
		prev = f.end
		names = append(names, f.name)
	}
	b.WriteString(text[prev:])
	return b.String(), names, nil
}

// diagLineRe picks, in g++'s output, the lines a diagnostic blames: errors
// and the "required from here" lines that lead from an error inside a
// libtorch template back to the function that instantiated it.
var diagLineRe = regexp.MustCompile(`(?m)^([^\s:]+):(\d+):\d+:\s+(?:(?:fatal )?error:|required from here)`)

// blamed returns the lines of file (a base name) that g++'s output blames,
// and whether it blamed anything elsewhere (a header).
func blamed(out, file string) (map[int]bool, bool) {
	lines := map[int]bool{}
	elsewhere := false
	for _, m := range diagLineRe.FindAllStringSubmatch(out, -1) {
		if m[1] != file && !strings.HasSuffix(m[1], "/"+file) {
			elsewhere = true
			continue
		}
		var n int
		fmt.Sscan(m[2], &n)
		lines[n] = true
	}
	return lines, elsewhere
}
