package campaign

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseBytes reads a byte count with an optional binary (KiB, MiB, GiB,
// TiB) or decimal (KB, MB, GB, TB) unit.
func ParseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want a positive number of bytes, optionally with KiB, MiB, GiB, TiB, KB, MB, GB or TB", s)
	}
	return n * mult, nil
}

// Retention bounds what the streams keep of a campaign's traffic: JetStream
// drops messages older than MaxAge and refuses new ones past MaxBytes (per
// stream), so a campaign of weeks cannot fill the servers' disks. Agents
// keep what the stream refuses in their spool.
type Retention struct {
	MaxAge time.Duration `yaml:"max_age,omitempty"`
	// MaxBytes is a size such as 50GiB.
	MaxBytes string `yaml:"max_bytes,omitempty"`
}

// Bytes is MaxBytes parsed; 0 when unset.
func (r Retention) Bytes() (int64, error) {
	if r.MaxBytes == "" {
		return 0, nil
	}
	return ParseBytes(r.MaxBytes)
}

// Validate checks the retention settings.
func (r Retention) Validate() error {
	var errs []error
	if r.MaxAge < 0 || r.MaxAge > 0 && r.MaxAge < time.Hour {
		errs = append(errs, fmt.Errorf("retention.max_age %s: want at least 1h (or leave it out): a stream must keep traffic longer than a worker may be down", r.MaxAge))
	}
	if _, err := r.Bytes(); err != nil {
		errs = append(errs, fmt.Errorf("retention.max_bytes: %w", err))
	}
	return errors.Join(errs...)
}
