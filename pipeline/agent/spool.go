package agent

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The spool keeps, in publication order, the batches JetStream has not
// acknowledged while it is unreachable. It is a series of segment files
// (NNNNNNNNNNNNNNNNNNNN.seg, numbered upwards); each starts with spoolMagic
// and holds records
//
//	u32 LE  body length
//	u32 LE  CRC-32C (Castagnoli) of the body
//	body    subject, message id, source, session (uvarint length + bytes each),
//	        first offset, next offset (uvarints), flags (bit 0: final),
//	        packets (uvarint), then the encoded batch (schemas, FORMAT.md)
//
// A segment is deleted once all its records are acknowledged; only the
// oldest can be, so a missing segment between two present ones means the
// files were damaged. A record that fails its length or CRC ends the spool:
// it and everything after it are discarded, and the agent reads those
// packets from the capture again, because it resumes after the last intact
// record. A segment is fsynced before the next one is started, so after a
// power cut a later record can only survive if every earlier one did.
const spoolMagic = "HMSPOOL1"

// spoolSlack bounds what a record adds to its batch (the names it repeats
// for the drain); the spool may overshoot its limit by at most this much.
const spoolSlack = 4 << 10

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type segment struct {
	seq     uint64
	path    string
	f       *os.File
	size    int64
	records int
	acked   int
}

// spoolRef locates a spooled batch's encoded bytes.
type spoolRef struct {
	seg *segment
	off int64
	n   int
}

// spooledBatch is a record found when the spool is opened.
type spooledBatch struct {
	meta batchMeta
	ref  spoolRef
}

type spool struct {
	dir    string
	max    int64
	segMax int64
	size   int64
	segs   []*segment
	w      *segment // the segment appended to; nil until the next append
	next   uint64   // sequence number of the next segment
	rec    []byte
}

// openSpool opens (or creates) the spool in dir and returns the records it
// holds, oldest first, with the segments they live in still open.
func openSpool(dir string, maxBytes int64) (*spool, []spooledBatch, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("create spool folder: %w", err)
	}
	s := &spool{dir: dir, max: maxBytes, segMax: min(max(maxBytes/8, 64<<10), 8<<20)}
	names, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		return nil, nil, fmt.Errorf("list spool %s: %w", dir, err)
	}
	type found struct {
		seq  uint64
		path string
	}
	var files []found
	for _, n := range names {
		seq, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(n), ".seg"), 10, 64)
		if err != nil {
			continue // not ours: leave it alone
		}
		files = append(files, found{seq, n})
	}
	slices.SortFunc(files, func(a, b found) int { return cmp.Compare(a.seq, b.seq) })

	var out []spooledBatch
	broken := ""
	for i, fl := range files {
		if broken == "" && i > 0 && fl.seq != files[i-1].seq+1 {
			broken = fmt.Sprintf("segment %d is missing", files[i-1].seq+1)
		}
		if broken != "" {
			if err := os.Remove(fl.path); err != nil {
				return nil, nil, fmt.Errorf("drop spool segment after damage: %w", err)
			}
			continue
		}
		seg, recs, why, err := s.load(fl.seq, fl.path)
		if err != nil {
			s.close()
			return nil, nil, err
		}
		broken = why
		s.next = fl.seq + 1
		if seg == nil {
			continue
		}
		s.segs = append(s.segs, seg)
		s.size += seg.size
		out = append(out, recs...)
	}
	if broken != "" {
		return s, out, &spoolDamage{dir: dir, why: broken}
	}
	return s, out, nil
}

// spoolDamage reports records that were discarded; the spool is usable.
type spoolDamage struct{ dir, why string }

func (e *spoolDamage) Error() string {
	return fmt.Sprintf("spool %s damaged (%s): the records from there on were discarded and their packets will be read from the captures again", e.dir, e.why)
}

// load reads one segment. A damaged record truncates the segment there and
// returns why; an empty segment is removed and yields a nil segment.
func (s *spool) load(seq uint64, path string) (*segment, []spooledBatch, string, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, "", fmt.Errorf("open spool segment: %w", err)
	}
	seg := &segment{seq: seq, path: path, f: f}
	br := bufio.NewReaderSize(f, 256<<10)
	var recs []spooledBatch
	why := ""
	var magic [len(spoolMagic)]byte
	if _, err := io.ReadFull(br, magic[:]); err != nil || string(magic[:]) != spoolMagic {
		why = fmt.Sprintf("%s has no spool header", filepath.Base(path))
	} else {
		seg.size = int64(len(spoolMagic))
		for {
			b, ref, err := readRecord(br, seg)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				why = fmt.Sprintf("%s at byte %d: %v", filepath.Base(path), seg.size, err)
				break
			}
			recs = append(recs, spooledBatch{meta: b, ref: ref})
			seg.size = ref.off + int64(ref.n)
			seg.records++
		}
	}
	if seg.records == 0 {
		f.Close()
		if err := os.Remove(path); err != nil {
			return nil, nil, "", fmt.Errorf("drop empty spool segment: %w", err)
		}
		return nil, nil, why, nil
	}
	if why != "" {
		if err := f.Truncate(seg.size); err != nil {
			f.Close()
			return nil, nil, "", fmt.Errorf("cut damaged spool segment %s: %w", path, err)
		}
	}
	return seg, recs, why, nil
}

func readRecord(br *bufio.Reader, seg *segment) (batchMeta, spoolRef, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		if err == io.EOF {
			return batchMeta{}, spoolRef{}, io.EOF
		}
		return batchMeta{}, spoolRef{}, errors.New("record header cut short")
	}
	n := binary.LittleEndian.Uint32(hdr[0:4])
	if n > 64<<20 {
		return batchMeta{}, spoolRef{}, fmt.Errorf("record claims %d bytes", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return batchMeta{}, spoolRef{}, errors.New("record cut short")
	}
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(hdr[4:8]) {
		return batchMeta{}, spoolRef{}, errors.New("record checksum mismatch")
	}
	m, data, err := decodeMeta(body)
	if err != nil {
		return batchMeta{}, spoolRef{}, err
	}
	start := seg.size + 8
	return m, spoolRef{seg: seg, off: start + int64(len(body)-len(data)), n: len(data)}, nil
}

func appendMeta(dst []byte, m *batchMeta) []byte {
	for _, s := range [...]string{m.subject, m.msgID, m.source, m.session} {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	dst = binary.AppendUvarint(dst, m.first)
	dst = binary.AppendUvarint(dst, m.next)
	var flags byte
	if m.final {
		flags = 1
	}
	dst = append(dst, flags)
	return binary.AppendUvarint(dst, uint64(m.packets))
}

func decodeMeta(body []byte) (batchMeta, []byte, error) {
	var m batchMeta
	bad := errors.New("record metadata malformed")
	for _, s := range [...]*string{&m.subject, &m.msgID, &m.source, &m.session} {
		l, k := binary.Uvarint(body)
		if k <= 0 || l > uint64(len(body)-k) {
			return m, nil, bad
		}
		*s = string(body[k : k+int(l)])
		body = body[k+int(l):]
	}
	var k int
	if m.first, k = binary.Uvarint(body); k <= 0 {
		return m, nil, bad
	}
	body = body[k:]
	if m.next, k = binary.Uvarint(body); k <= 0 || len(body) == k {
		return m, nil, bad
	}
	m.final = body[k]&1 != 0
	body = body[k+1:]
	p, k := binary.Uvarint(body)
	if k <= 0 || m.next < m.first {
		return m, nil, bad
	}
	m.packets = int(p)
	return m, body[k:], nil
}

// room reports whether n more bytes fit. An empty spool takes any record,
// so a limit smaller than one batch slows the agent down but never stalls it.
func (s *spool) room(n int) bool { return s.size == 0 || s.size+int64(n) <= s.max }

// append writes one batch as the newest record.
func (s *spool) append(m *batchMeta, data []byte) (spoolRef, error) {
	s.rec = append(s.rec[:0], make([]byte, 8)...)
	s.rec = appendMeta(s.rec, m)
	dataOff := len(s.rec)
	s.rec = append(s.rec, data...)
	body := s.rec[8:]
	binary.LittleEndian.PutUint32(s.rec[0:4], uint32(len(body)))
	binary.LittleEndian.PutUint32(s.rec[4:8], crc32.Checksum(body, castagnoli))
	if s.w != nil && s.w.records > 0 && s.w.size+int64(len(s.rec)) > s.segMax {
		if err := s.seal(); err != nil {
			return spoolRef{}, err
		}
	}
	if s.w == nil {
		if err := s.startSegment(); err != nil {
			return spoolRef{}, err
		}
	}
	if _, err := s.w.f.WriteAt(s.rec, s.w.size); err != nil {
		return spoolRef{}, fmt.Errorf("write spool segment %s: %w (is the disk full? --spool-max bounds the spool)", s.w.path, err)
	}
	ref := spoolRef{seg: s.w, off: s.w.size + int64(dataOff), n: len(data)}
	s.w.size += int64(len(s.rec))
	s.w.records++
	s.size += int64(len(s.rec))
	return ref, nil
}

func (s *spool) startSegment() error {
	path := filepath.Join(s.dir, fmt.Sprintf("%020d.seg", s.next))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create spool segment: %w", err)
	}
	if _, err := f.Write([]byte(spoolMagic)); err != nil {
		f.Close()
		return fmt.Errorf("write spool segment %s: %w", path, err)
	}
	// The new name must be durable before records in it can be relied on.
	if err := syncDir(s.dir); err != nil {
		f.Close()
		return err
	}
	seg := &segment{seq: s.next, path: path, f: f, size: int64(len(spoolMagic))}
	s.next++
	s.segs = append(s.segs, seg)
	s.size += seg.size
	s.w = seg
	return nil
}

// seal makes the write segment durable before a later one can exist.
func (s *spool) seal() error {
	if err := s.w.f.Sync(); err != nil {
		return fmt.Errorf("sync spool segment %s: %w", s.w.path, err)
	}
	s.w = nil
	return nil
}

// read returns a spooled batch's encoded bytes in buf's storage.
func (s *spool) read(ref spoolRef, buf []byte) ([]byte, error) {
	buf = slices.Grow(buf[:0], ref.n)[:ref.n]
	if _, err := ref.seg.f.ReadAt(buf, ref.off); err != nil {
		return nil, fmt.Errorf("read spool segment %s: %w", ref.seg.path, err)
	}
	return buf, nil
}

// ack records that a spooled batch is in the stream; acknowledgements come
// in spool order, so whole segments at the front become free.
func (s *spool) ack(ref spoolRef) error {
	ref.seg.acked++
	for len(s.segs) > 0 && s.segs[0].acked == s.segs[0].records {
		seg := s.segs[0]
		if seg == s.w && seg.records == 0 {
			break
		}
		seg.f.Close()
		if err := os.Remove(seg.path); err != nil {
			return fmt.Errorf("drop acknowledged spool segment: %w", err)
		}
		s.size -= seg.size
		s.segs = s.segs[1:]
		if seg == s.w {
			s.w = nil
		}
	}
	return nil
}

// close syncs what was written and closes the segments.
func (s *spool) close() error {
	var err error
	if s.w != nil {
		err = s.w.f.Sync()
	}
	for _, seg := range s.segs {
		seg.f.Close()
	}
	s.segs, s.w = nil, nil
	if err != nil {
		return fmt.Errorf("sync spool: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open spool folder: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync spool folder %s: %w", dir, err)
	}
	return nil
}
