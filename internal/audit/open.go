package audit

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Files lists the decision-log files that paths name: a file as it is, a
// folder as the files in it and its subfolders (those of several replicas,
// say), in the order of their names, leaving out hidden ones (the log's
// own state, a dotfile beside audit.file). "-" is standard input.
func Files(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if p == "-" || err == nil && !fi.IsDir() {
			out = append(out, p)
			continue
		}
		if err != nil {
			return nil, err
		}
		var found []string
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			hidden := path != p && strings.HasPrefix(d.Name(), ".")
			switch {
			case hidden && d.IsDir():
				return filepath.SkipDir
			case !hidden && d.Type().IsRegular():
				found = append(found, path)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("%s: a folder with no decision-log file in it", p)
		}
		sort.Strings(found)
		out = append(out, found...)
	}
	return out, nil
}

// Open opens a decision-log file for reading, decompressing it when it is
// gzipped (as logrotate's compress leaves rotated files, whatever their
// name). "-" is standard input.
func Open(path string) (io.ReadCloser, error) {
	f := io.NopCloser(os.Stdin)
	if path != "-" {
		file, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		f = file
	}
	br := bufio.NewReaderSize(f, 64<<10)
	magic, _ := br.Peek(2)
	if !bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		return readCloser{br, f}, nil
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return readCloser{zr, f}, nil
}

type readCloser struct {
	io.Reader
	c io.Closer
}

func (r readCloser) Close() error { return r.c.Close() }

// maxLine bounds one line read back: a decision record is a few KiB.
const maxLine = 16 << 20

// lineReader reads lines with their exact bytes, and says whether each
// ended with a newline.
type lineReader struct {
	r   *bufio.Reader
	buf []byte
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// next returns the next line without its newline, whether it had one, and
// io.EOF after the last. A line over maxLine is cut there (complete false).
// The line is valid until the next call.
func (lr *lineReader) next() (line []byte, complete bool, err error) {
	lr.buf = lr.buf[:0]
	for {
		chunk, err := lr.r.ReadSlice('\n')
		lr.buf = append(lr.buf, chunk...)
		switch {
		case err == nil:
			return lr.buf[:len(lr.buf)-1], true, nil
		case err == bufio.ErrBufferFull:
			if len(lr.buf) > maxLine {
				for err == bufio.ErrBufferFull { // skip the rest of the line
					_, err = lr.r.ReadSlice('\n')
				}
				return lr.buf, false, nil
			}
		case err == io.EOF && len(lr.buf) > 0:
			return lr.buf, false, nil
		default:
			return nil, false, err
		}
	}
}
