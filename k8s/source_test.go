package k8s

import (
	"bufio"
	"encoding/json"
	"fmt"
	"go/ast"
	gobuild "go/build"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// What the manifests are checked against: the binaries the repository
// builds, their flags, the homemole CLI's commands, and the images the
// Dockerfiles under deploy/ make. All read from the source, so a renamed
// flag or command fails here rather than in a pod.

const (
	root   = ".." // the repository, seen from k8s/
	module = "github.com/homemole/homemole"
)

// images maps each HomeMole image the manifests may use to the Dockerfile
// that builds it.
var images = map[string]string{
	"ghcr.io/homemole/worker":       "deploy/worker.Dockerfile",
	"ghcr.io/homemole/trainer":      "deploy/trainer.Dockerfile",
	"ghcr.io/homemole/trainer-cuda": "deploy/trainer-cuda.Dockerfile",
}

// binDir is where the images put the binaries.
const binDir = "/usr/local/bin/"

// dockerImage is what one Dockerfile makes.
type dockerImage struct {
	bins       []string // binaries in binDir
	entrypoint string
	cgoFree    bool   // every go build in it sets CGO_ENABLED=0
	final      string // the last FROM
}

// dockerInstructions reads a Dockerfile's instructions, continuation lines
// joined and comments dropped.
func dockerInstructions(t reporter, path string) [][2]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer f.Close()
	var out [][2]string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		cont := strings.HasSuffix(line, "\\")
		cur.WriteString(strings.TrimSuffix(line, "\\"))
		cur.WriteString(" ")
		if cont {
			continue
		}
		s := strings.TrimSpace(cur.String())
		cur.Reset()
		if s == "" {
			continue
		}
		instr, rest, _ := strings.Cut(s, " ")
		out = append(out, [2]string{strings.ToUpper(instr), strings.TrimSpace(rest)})
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

var goPkgArg = regexp.MustCompile(`(?:^|\s)(\./[\w./-]+)`)

// outFile is a go build's -o /out/NAME, a file rather than the folder.
var outFile = regexp.MustCompile(`-o /out/([\w.-]+)(?:\s|$)`)

// parseDockerfile checks that what the Dockerfile names exists in the
// repository (packages it builds or runs, files it copies) and returns the
// image it makes. No Docker daemon runs here, so this is how far a test can go.
func parseDockerfile(t reporter, rel string) dockerImage {
	t.Helper()
	img := dockerImage{cgoFree: true}
	built := map[string]bool{} // /out/NAME
	builds := 0
	for _, in := range dockerInstructions(t, filepath.Join(root, rel)) {
		switch in[0] {
		case "FROM":
			img.final = strings.Fields(in[1])[0]
			if strings.HasPrefix(img.final, "--platform") {
				img.final = strings.Fields(in[1])[1]
			}
		case "RUN":
			for _, cmd := range strings.Split(in[1], "&&") {
				cmd = strings.TrimSpace(cmd)
				switch {
				case strings.Contains(cmd, "go build"):
					builds++
					if !strings.Contains(cmd, "CGO_ENABLED=0") {
						img.cgoFree = false
					}
					if !strings.Contains(cmd, "-o /out/") {
						t.Errorf("%s: %q: build into /out/, which the later COPY takes from", rel, cmd)
					}
					// -o /out/NAME names the one binary; -o /out/ names
					// each after its package.
					named := outFile.FindStringSubmatch(cmd)
					for _, m := range goPkgArg.FindAllStringSubmatch(strings.SplitN(cmd, "go build", 2)[1], -1) {
						pkg := m[1]
						if !isMainPackage(t, pkg) {
							t.Errorf("%s builds %s, which is not a main package of this repository", rel, pkg)
						}
						if named != nil {
							built[named[1]] = true
						} else {
							built[path(pkg)] = true
						}
					}
				case strings.Contains(cmd, "go run"):
					for _, m := range goPkgArg.FindAllStringSubmatch(strings.SplitN(cmd, "go run", 2)[1], -1) {
						if !isMainPackage(t, m[1]) {
							t.Errorf("%s runs %s, which is not a main package of this repository", rel, m[1])
						}
					}
				}
			}
		case "COPY":
			args := strings.Fields(in[1])
			from := ""
			for len(args) > 0 && strings.HasPrefix(args[0], "--") {
				if v, ok := strings.CutPrefix(args[0], "--from="); ok {
					from = v
				}
				args = args[1:]
			}
			if len(args) < 2 {
				t.Errorf("%s: COPY %s: want sources and a destination", rel, in[1])
				continue
			}
			srcs, dst := args[:len(args)-1], args[len(args)-1]
			for _, s := range srcs {
				switch {
				case from == "":
					if _, err := os.Stat(filepath.Join(root, s)); err != nil {
						t.Errorf("%s copies %s from the build context: %v", rel, s, err)
					}
				case from == "build" && strings.HasPrefix(s, "/out/"):
					if !built[strings.TrimPrefix(s, "/out/")] {
						t.Errorf("%s copies %s, which no go build in it makes", rel, s)
					} else if dst == binDir {
						img.bins = append(img.bins, strings.TrimPrefix(s, "/out/"))
					}
				}
			}
		case "ENTRYPOINT":
			var ep []string
			if err := json.Unmarshal([]byte(in[1]), &ep); err != nil || len(ep) == 0 {
				t.Errorf("%s: ENTRYPOINT %s: want the exec (JSON) form", rel, in[1])
				continue
			}
			img.entrypoint = ep[0]
		}
	}
	if builds == 0 || len(img.bins) == 0 {
		t.Errorf("%s builds %d times and installs %v: want the binaries in %s", rel, builds, img.bins, binDir)
	}
	if b, ok := strings.CutPrefix(img.entrypoint, binDir); !ok || !slices.Contains(img.bins, b) {
		t.Errorf("%s: ENTRYPOINT %q is not a binary the image installs (%v)", rel, img.entrypoint, img.bins)
	}
	return img
}

func path(pkg string) string { return filepath.Base(filepath.Clean(pkg)) }

func isMainPackage(t reporter, rel string) bool {
	t.Helper()
	p, err := gobuild.Default.ImportDir(filepath.Join(root, rel), 0)
	return err == nil && p.Name == "main"
}

// parsePackage parses the non-test files of the package in dir (relative
// to the repository) that the build would use.
func parsePackage(t reporter, dir string) []*ast.File {
	t.Helper()
	abs := filepath.Join(root, dir)
	// The images that run homemole's model commands build it with -tags
	// torch (deploy/trainer.Dockerfile); without the tag those commands are
	// stubs that hand over to homemole-torch, and their flags are not there.
	bc := gobuild.Default
	bc.BuildTags = append(slices.Clone(bc.BuildTags), "torch")
	p, err := bc.ImportDir(abs, 0)
	if err != nil {
		t.Fatalf("package %s: %v", dir, err)
	}
	fset := token.NewFileSet()
	var out []*ast.File
	for _, name := range append(slices.Clone(p.GoFiles), p.CgoFiles...) {
		f, err := parser.ParseFile(fset, filepath.Join(abs, name), nil, 0)
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		out = append(out, f)
	}
	return out
}

// services lists the binaries: one folder per main package under services/.
func services(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, "services"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && isMainPackage(t, filepath.Join("services", e.Name())) {
			out = append(out, e.Name())
		}
	}
	if len(out) < 4 {
		t.Fatalf("found only %v under services/", out)
	}
	return out
}

// homemoleCommands reads the keys of the map commands() returns in
// services/homemole/full/main.go.
func homemoleCommands(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(root, "services/homemole/full/main.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name != "commands" {
			continue
		}
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			cl, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			if _, ok := cl.Type.(*ast.MapType); !ok {
				return true
			}
			for _, e := range cl.Elts {
				if kv, ok := e.(*ast.KeyValueExpr); ok {
					if s, ok := stringLit(kv.Key); ok {
						out = append(out, s)
					}
				}
			}
			return false
		})
	}
	if len(out) < 5 {
		t.Fatalf("read %v as homemole's commands: the shape of commands() changed", out)
	}
	return out
}

// homemoleSubcommands reads the words the CLI's commands take as their
// first argument (`homemole dataset assemble`): the literals args[0] is
// compared with in services/homemole/full, and the keys of the subcommand
// tables runSubcommand looks args[0] up in (map[string]runFunc literals,
// sharedSubcommands' names, subs["word"] = run).
func homemoleSubcommands(t *testing.T) []string {
	t.Helper()
	var out []string
	add := func(e ast.Expr) {
		if s, ok := stringLit(e); ok && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, f := range parsePackage(t, "services/homemole/full") {
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CompositeLit:
				if mt, ok := n.Type.(*ast.MapType); ok {
					if v, ok := mt.Value.(*ast.Ident); ok && v.Name == "runFunc" {
						for _, el := range n.Elts {
							if kv, ok := el.(*ast.KeyValueExpr); ok {
								add(kv.Key)
							}
						}
					}
				}
			case *ast.CallExpr:
				if id, ok := n.Fun.(*ast.Ident); ok && id.Name == "sharedSubcommands" && len(n.Args) > 1 {
					for _, a := range n.Args[1:] {
						add(a)
					}
				}
			case *ast.AssignStmt:
				for _, l := range n.Lhs {
					if ix, ok := l.(*ast.IndexExpr); ok {
						if id, ok := ix.X.(*ast.Ident); ok && id.Name == "subs" {
							add(ix.Index)
						}
					}
				}
			}
			be, ok := n.(*ast.BinaryExpr)
			if !ok || be.Op != token.EQL && be.Op != token.NEQ {
				return true
			}
			ix, ok := be.X.(*ast.IndexExpr)
			if !ok {
				return true
			}
			if id, ok := ix.X.(*ast.Ident); !ok || id.Name != "args" {
				return true
			}
			if lit, ok := ix.Index.(*ast.BasicLit); !ok || lit.Value != "0" {
				return true
			}
			if s, ok := stringLit(be.Y); ok && !slices.Contains(out, s) {
				out = append(out, s)
			}
			return true
		})
	}
	return out
}

func stringLit(e ast.Expr) (string, bool) {
	bl, ok := e.(*ast.BasicLit)
	if !ok || bl.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(bl.Value)
	return s, err == nil
}

// flagMethods are flag.FlagSet's definers; the flag's name is the first
// argument, or the second for the ...Var forms.
var flagMethods = map[string]int{
	"String": 0, "Int": 0, "Int64": 0, "Uint": 0, "Uint64": 0, "Bool": 0, "Float64": 0, "Duration": 0, "Func": 0, "BoolFunc": 0,
	"StringVar": 1, "IntVar": 1, "Int64Var": 1, "UintVar": 1, "Uint64Var": 1, "BoolVar": 1, "Float64Var": 1, "DurationVar": 1, "Var": 1, "TextVar": 1,
}

// binaryFlags collects the flag names a binary's package and the
// repository packages it imports (transitively) define. It is an upper bound
// (homemole's subcommands share one set, and a package may define flags
// for another binary), which catches misspelt and removed flags.
func binaryFlags(t *testing.T, bin string) map[string]bool {
	t.Helper()
	flags := map[string]bool{}
	seen := map[string]bool{}
	pkg := "services/" + bin
	if bin == "homemole" {
		// The full CLI: the images install it as homemole, and the front
		// hands it every command but features (cmdkit, which it imports).
		pkg = "services/homemole/full"
	}
	queue := []string{pkg}
	for len(queue) > 0 {
		dir := queue[0]
		queue = queue[1:]
		if seen[dir] {
			continue
		}
		seen[dir] = true
		for _, f := range parsePackage(t, dir) {
			for _, imp := range f.Imports {
				ip, _ := strconv.Unquote(imp.Path.Value)
				if rel, ok := strings.CutPrefix(ip, module+"/"); ok {
					queue = append(queue, rel)
				}
			}
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if i, ok := flagMethods[sel.Sel.Name]; ok && len(call.Args) > i {
					if s, ok := stringLit(call.Args[i]); ok {
						flags[s] = true
					}
				}
				return true
			})
		}
	}
	return flags
}

// TestSourceReaders makes sure the readers above find what they should, so
// the manifest checks that rely on them cannot pass by reading nothing.
func TestSourceReaders(t *testing.T) {
	if got := services(t); !slices.Contains(got, "labeler") || !slices.Contains(got, "homemole") || slices.Contains(got, "internal") {
		t.Errorf("services: %v", got)
	}
	if got := homemoleCommands(t); !slices.Contains(got, "cv") || !slices.Contains(got, "serve") {
		t.Errorf("homemole commands: %v", got)
	}
	if got := homemoleSubcommands(t); !slices.Contains(got, "assemble") || !slices.Contains(got, "verify") {
		t.Errorf("homemole subcommands: %v", got)
	}
	fl := binaryFlags(t, "windower")
	for _, want := range []string{"campaign", "dataset", "nats", "s3", "metrics-addr", "window"} {
		if !fl[want] {
			t.Errorf("windower flags lack --%s (found %d flags)", want, len(fl))
		}
	}
	if fl["fold-index"] {
		t.Error("windower flags include homemole cv's --fold-index: the reader follows packages it should not")
	}
	if fl := binaryFlags(t, "homemole"); !fl["fold-index"] || !fl["gather"] {
		t.Error("homemole flags lack cv's --fold-index or --gather")
	}
	for repo, df := range images {
		img := parseDockerfile(t, df)
		t.Logf("%s (%s): %v, entrypoint %s, from %s, cgo-free %v", repo, df, img.bins, img.entrypoint, img.final, img.cgoFree)
	}
	w := parseDockerfile(t, images["ghcr.io/homemole/worker"])
	if !w.cgoFree || !strings.Contains(w.final, "distroless/static") {
		t.Errorf("the worker image must be CGO-free on distroless/static: cgo-free %v, from %s", w.cgoFree, w.final)
	}
	if slices.Contains(w.bins, "trainer") || slices.Contains(w.bins, "homemole") {
		t.Errorf("the worker image holds %v: the trainer and the CLI need libtorch", w.bins)
	}
}

// A Dockerfile that names a missing package or copies what it never built
// must fail the reader.
func TestDockerfileReaderFails(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.Dockerfile")
	if err := os.WriteFile(bad, []byte("FROM golang AS build\nRUN go build -o /out/ ./services/nosuch\nFROM scratch\nCOPY --from=build /out/labeler /usr/local/bin/\nENTRYPOINT [\"/usr/local/bin/labeler\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(abs, bad)
	if err != nil {
		t.Fatal(err)
	}
	var r recorder
	r.run(func() { parseDockerfile(&r, rel) })
	all := strings.Join(r.errs, "\n")
	if !strings.Contains(all, "builds ./services/nosuch") || !strings.Contains(all, "copies /out/labeler, which no go build") {
		t.Errorf("the Dockerfile reader said %q; want the missing package and the binary never built", r.errs)
	}
}

// reporter is what the checks report to: a *testing.T, or a recorder in the
// tests that prove a check can fail.
type reporter interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

type recorder struct{ errs []string }

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// Fatalf ends the goroutine, as testing.T's does; run waits for it.
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

func (r *recorder) run(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}
