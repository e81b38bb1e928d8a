package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func fillSpool(t testing.TB, dir string, n int) {
	t.Helper()
	sp, recs, err := openSpool(dir, 256<<10)
	if err != nil || len(recs) != 0 {
		t.Fatalf("open empty spool: %d records, %v", len(recs), err)
	}
	sp.segMax = 3200 // three records of about 1030 bytes a segment
	for i := range n {
		m := batchMeta{subject: "s", msgID: fmt.Sprint(i), source: "src", session: "sess", first: uint64(10 * i), next: uint64(10*i + 10), packets: 10}
		if _, err := sp.append(&m, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.close(); err != nil {
		t.Fatal(err)
	}
}

// TestSpoolDamage: what survives a damaged spool is the records before the
// first damage, in order; the files after it are removed.
func TestSpoolDamage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, segs []string)
		want   int
	}{
		{"intact", func(*testing.T, []string) {}, 10},
		{"checksum", func(t *testing.T, segs []string) {
			f, err := os.OpenFile(segs[1], os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte{0xff}, 1500); err != nil { // inside the second record
				t.Fatal(err)
			}
		}, 4},
		{"missing segment", func(t *testing.T, segs []string) {
			if err := os.Remove(segs[2]); err != nil {
				t.Fatal(err)
			}
		}, 6},
		{"torn tail", func(t *testing.T, segs []string) {
			last := segs[len(segs)-1]
			fi, _ := os.Stat(last)
			if err := os.Truncate(last, fi.Size()-1); err != nil {
				t.Fatal(err)
			}
		}, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			fillSpool(t, dir, 10)
			segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
			if len(segs) != 4 {
				t.Fatalf("want 4 segments of 3, 3, 3 and 1 records, got %d", len(segs))
			}
			tc.damage(t, segs)
			sp, recs, err := openSpool(dir, 256<<10)
			var damage *spoolDamage
			if (tc.want == 10) != (err == nil) || (err != nil && !errors.As(err, &damage)) {
				t.Fatalf("open: %v", err)
			}
			if len(recs) != tc.want {
				t.Fatalf("%d records survive, want %d", len(recs), tc.want)
			}
			for i, r := range recs {
				if r.meta.msgID != fmt.Sprint(i) || r.meta.first != uint64(10*i) {
					t.Fatalf("record %d is %+v", i, r.meta)
				}
				data, err := sp.read(r.ref, nil)
				if err != nil || len(data) != 1000 {
					t.Fatalf("record %d: %d bytes, %v", i, len(data), err)
				}
			}
			// Acknowledging everything empties the folder.
			for _, r := range recs {
				if err := sp.ack(r.ref); err != nil {
					t.Fatal(err)
				}
			}
			if left, _ := filepath.Glob(filepath.Join(dir, "*.seg")); len(left) != 0 || sp.size != 0 {
				t.Fatalf("after every ack %d segments and %d bytes remain", len(left), sp.size)
			}
			sp.close()
		})
	}
}

// FuzzSpoolSegment: whatever a segment file holds (a torn write, a flipped
// bit, another program's file), opening the spool never panics, keeps only
// records whose data lies inside the file, cuts the file after them, and a
// second open finds exactly those records and no damage.
func FuzzSpoolSegment(f *testing.F) {
	dir := f.TempDir()
	fillSpool(f, dir, 3) // one segment of three records
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	good, err := os.ReadFile(segs[0])
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-7])
	f.Add([]byte(spoolMagic))
	f.Add([]byte("not a spool"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "00000000000000000001.seg")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		sp, recs, err := openSpool(dir, 1<<20)
		var damage *spoolDamage
		if err != nil && !errors.As(err, &damage) {
			t.Fatalf("open: %v", err)
		}
		for i, r := range recs {
			got, err := sp.read(r.ref, nil)
			if err != nil || len(got) != r.ref.n || r.ref.off+int64(r.ref.n) > int64(len(data)) {
				t.Fatalf("record %d: %d of %d bytes at %d, %v", i, len(got), r.ref.n, r.ref.off, err)
			}
			if r.meta.next < r.meta.first {
				t.Fatalf("record %d: offsets %d..%d run backwards", i, r.meta.first, r.meta.next)
			}
		}
		sp.close()
		again, recs2, err := openSpool(dir, 1<<20)
		if err != nil {
			t.Fatalf("second open after the spool cut its damage: %v", err)
		}
		defer again.close()
		if len(recs2) != len(recs) {
			t.Fatalf("second open finds %d records, the first kept %d", len(recs2), len(recs))
		}
		for i := range recs {
			if recs2[i].meta != recs[i].meta {
				t.Fatalf("record %d changed between opens: %+v, %+v", i, recs[i].meta, recs2[i].meta)
			}
		}
	})
}
