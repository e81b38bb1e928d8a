// Package fieldcheck gathers every field of a configuration that cannot
// work, not only the first, so that a bad configuration is fixed in one go.
// The forest's and the neural models' Validate report through it.
package fieldcheck

import (
	"errors"
	"fmt"
	"strings"
)

// Errors are the fields found bad so far; the zero value has none.
type Errors struct {
	msgs []string
}

// Bad notes that field, whose value is v, must be want.
func (e *Errors) Bad(field string, v any, want string) {
	e.msgs = append(e.msgs, fmt.Sprintf("%s is %v, must be %s", field, v, want))
}

// Positive notes field unless v > 0.
func (e *Errors) Positive(field string, v int) {
	if v <= 0 {
		e.Bad(field, v, "> 0")
	}
}

// NotNegative notes field unless v >= 0.
func (e *Errors) NotNegative(field string, v int) {
	if v < 0 {
		e.Bad(field, v, ">= 0")
	}
}

// Failed notes field's own error, for a check that says more than what
// the value must be.
func (e *Errors) Failed(field string, err error) {
	e.msgs = append(e.msgs, field+": "+err.Error())
}

// Err is nil when no field was noted, else one error that names them all
// after prefix.
func (e *Errors) Err(prefix string) error {
	if len(e.msgs) == 0 {
		return nil
	}
	return errors.New(prefix + ": " + strings.Join(e.msgs, "; "))
}
