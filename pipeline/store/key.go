package store

import (
	"errors"
	"fmt"
	"strings"
)

// MaxKeyLen is S3's limit on a key's length in bytes.
const MaxKeyLen = 1024

// ErrBadKey marks a key the store refuses to use.
var ErrBadKey = errors.New("unsafe object key")

// CheckKey refuses keys that could reach outside the folder they were built
// for: empty, longer than MaxKeyLen, starting with '/', holding an empty,
// "." or ".." segment, a backslash or a control character. A file-backed
// S3 server (the embedded one) resolves "../" like a path, into another
// folder or bucket; S3 itself would keep such a key verbatim, where every
// reader that joins paths would still take it for another one. Keys are
// built from checked names (Key), so this only stops what slipped past.
func CheckKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrBadKey)
	}
	return checkKey(key, false)
}

// checkPrefix is CheckKey for a List prefix, which may be empty or end
// with '/'.
func checkPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	return checkKey(strings.TrimSuffix(prefix, "/"), true)
}

func checkKey(key string, prefix bool) error {
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w: key %.60q... is %d bytes long; S3 allows %d", ErrBadKey, key, len(key), MaxKeyLen)
	}
	if i := strings.IndexFunc(key, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }); i >= 0 {
		return fmt.Errorf("%w: key %q holds %q", ErrBadKey, key, key[i])
	}
	if prefix && key == "" {
		return nil
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "", ".", "..":
			return fmt.Errorf("%w: key %q has an empty, \".\" or \"..\" segment", ErrBadKey, key)
		}
	}
	return nil
}

// Key joins checked names into a key: each segment must be non-empty and
// free of '/', and the result must pass CheckKey. Unlike path.Join it never
// cleans "a/../b" into "b": a name that would climb is an error, not a
// different key.
func Key(segments ...string) (string, error) {
	for _, s := range segments {
		if s == "" || strings.Contains(s, "/") {
			return "", fmt.Errorf("%w: segment %q of key %q is empty or holds '/'", ErrBadKey, s, strings.Join(segments, "/"))
		}
	}
	k := strings.Join(segments, "/")
	if err := CheckKey(k); err != nil {
		return "", err
	}
	return k, nil
}
