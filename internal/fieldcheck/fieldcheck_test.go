package fieldcheck

import (
	"errors"
	"testing"
)

func TestErrors(t *testing.T) {
	var e Errors
	e.Positive("A", 1)
	e.NotNegative("B", 0)
	if err := e.Err("cfg"); err != nil {
		t.Fatalf("good fields reported: %v", err)
	}
	e.Positive("A", 0)
	e.NotNegative("B", -1)
	e.Bad("C", `"x"`, `"y" or "z"`)
	e.Failed("D", errors.New("no such device"))
	const want = `cfg: A is 0, must be > 0; B is -1, must be >= 0; C is "x", must be "y" or "z"; D: no such device`
	if err := e.Err("cfg"); err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}
