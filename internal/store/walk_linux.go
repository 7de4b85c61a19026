package store

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"golang.org/x/sys/unix"
)

// localDriver is distribution's filesystem driver with a walk of its own.
// Distribution's walks by listing each folder and then stating every entry
// by its full path (storagedriver.WalkFallback), folders included: a
// dozen system calls per stored blob, each resolving a path nine folders
// deep, and a sweep walks every blob. This one reads each folder once with
// the entries' types (getdents), stats only files, relative to their
// folder (fstatat), and opens folders relative to their parent: the same
// entries, in the same order, for about half the calls.
type localDriver struct {
	storagedriver.StorageDriver
	root string
}

// Walk calls f for every file and folder under from, depth first, each
// folder's entries in order of name, as storagedriver.WalkFallback does
// (ErrSkipDir from f skips a folder, ErrFilledBuffer ends the walk); an
// entry removed while walking is left out. A folder's ModTime is read when
// asked for, which the store never does. With options (a start-after
// hint), distribution's walk.
func (d *localDriver) Walk(ctx context.Context, from string, f storagedriver.WalkFn, options ...func(*storagedriver.WalkOptions)) error {
	if len(options) > 0 || (!storagedriver.PathRegexp.MatchString(from) && from != "/") {
		return d.StorageDriver.Walk(ctx, from, f, options...)
	}
	fd, err := unix.Open(filepath.Join(d.root, from), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return storagedriver.PathNotFoundError{Path: from, DriverName: d.Name()}
		}
		return &os.PathError{Op: "open", Path: from, Err: err}
	}
	w := walk{ctx: ctx, f: f, root: d.root, buf: make([]byte, 64<<10)}
	_, err = w.dir(fd, strings.TrimSuffix(from, "/"))
	return err
}

func newLocalDriver(d storagedriver.StorageDriver, root string) storagedriver.StorageDriver {
	return &localDriver{StorageDriver: d, root: root}
}

type walk struct {
	ctx  context.Context
	f    storagedriver.WalkFn
	root string
	buf  []byte
}

// dir walks the folder open as fd, at path p, and closes fd; false: the
// walk ends.
func (w *walk) dir(fd int, p string) (bool, error) {
	defer unix.Close(fd)
	if err := w.ctx.Err(); err != nil {
		return false, err
	}
	ents, err := w.read(fd)
	if err != nil {
		return false, &os.PathError{Op: "getdents", Path: p, Err: err}
	}
	for _, e := range ents {
		fi := walkInfo{path: p + "/" + e.name, root: w.root, dir: e.typ == unix.DT_DIR}
		if e.typ != unix.DT_DIR {
			var st unix.Stat_t
			if err := unix.Fstatat(fd, e.name, &st, 0); err != nil {
				if errors.Is(err, unix.ENOENT) {
					continue
				}
				return false, &os.PathError{Op: "stat", Path: fi.path, Err: err}
			}
			fi.dir = st.Mode&unix.S_IFMT == unix.S_IFDIR
			if !fi.dir {
				fi.size, fi.mod = st.Size, time.Unix(st.Mtim.Unix())
			}
		}
		switch err := w.f(fi); {
		case err == nil && fi.dir:
			child, err := unix.Openat(fd, e.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			if err != nil {
				return false, &os.PathError{Op: "open", Path: fi.path, Err: err}
			}
			if ok, err := w.dir(child, fi.path); !ok || err != nil {
				return ok, err
			}
		case err == nil, errors.Is(err, storagedriver.ErrSkipDir):
		case errors.Is(err, storagedriver.ErrFilledBuffer):
			return false, nil
		default:
			return false, err
		}
	}
	return true, nil
}

type dirent struct {
	name string
	typ  uint8
}

// read returns the entries of the folder open as fd but . and .., by name.
func (w *walk) read(fd int) ([]dirent, error) {
	var ents []dirent
	for {
		n, err := unix.Getdents(fd, w.buf)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			break
		}
		// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
		for b := w.buf[:n]; len(b) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				return nil, unix.EINVAL
			}
			name := b[19:reclen]
			if i := slices.Index(name, 0); i >= 0 {
				name = name[:i]
			}
			if s := string(name); s != "." && s != ".." {
				ents = append(ents, dirent{s, b[18]})
			}
			b = b[reclen:]
		}
	}
	slices.SortFunc(ents, func(a, b dirent) int { return strings.Compare(a.name, b.name) })
	return ents, nil
}

// walkInfo is an entry of a walk: a file with its size and time, or a
// folder whose time is read when asked for.
type walkInfo struct {
	path, root string
	dir        bool
	size       int64
	mod        time.Time
}

func (fi walkInfo) Path() string { return fi.path }
func (fi walkInfo) Size() int64  { return fi.size }
func (fi walkInfo) IsDir() bool  { return fi.dir }

// ModTime is the file's, or the folder's read now (the zero time when it
// is gone).
func (fi walkInfo) ModTime() time.Time {
	if !fi.dir {
		return fi.mod
	}
	st, err := os.Stat(filepath.Join(fi.root, filepath.FromSlash(path.Clean(fi.path))))
	if err != nil {
		return time.Time{}
	}
	return st.ModTime()
}
