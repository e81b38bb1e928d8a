package bus

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
)

// EnvBool reads a boolean setting from the environment: unset or empty is
// false; otherwise one of strconv.ParseBool's spellings (true, false, 1, 0,
// t, f, in any case). Anything else (yes, on) is an error naming the
// variable, never a silent false: the settings read this way switch on
// TLS.
func EnvBool(name string) (bool, error) {
	v := os.Getenv(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s=%q: want true or false (or 1, 0), or leave it unset for false", name, v)
	}
	return b, nil
}

// BoolVarEnv registers a boolean flag whose default *p came from an
// environment variable, read with EnvBool into *p and *envErr. The flag,
// when given, wins over the variable, and with it over the variable's
// error, which is cleared.
func BoolVarEnv(fs *flag.FlagSet, p *bool, envErr *error, name, usage string) {
	fs.Var(envBool{p, envErr}, name, usage)
}

type envBool struct {
	p      *bool
	envErr *error
}

func (f envBool) String() string {
	if f.p == nil {
		return "false"
	}
	return strconv.FormatBool(*f.p)
}

func (f envBool) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	*f.p, *f.envErr = b, nil
	return nil
}

func (f envBool) IsBoolFlag() bool { return true }

// envInt is an integer flag whose default came from an environment
// variable; given, it clears the variable's error as envBool does.
type envInt struct {
	p      *int
	envErr *error
}

func (f envInt) String() string {
	if f.p == nil {
		return "0"
	}
	return strconv.Itoa(*f.p)
}

func (f envInt) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("want a whole number")
	}
	*f.p, *f.envErr = n, nil
	return nil
}
