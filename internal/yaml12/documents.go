package yaml12

import (
	"bytes"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// Doc is one document of a multi-document stream.
type Doc struct {
	// Index counts the documents of the stream from 0, empty ones included,
	// as kubectl does: `---` lines with nothing between them make no
	// document, a part with only comments does.
	Index int
	// Line is the line of the stream the document starts on, from 1.
	Line int
	// JSON is the document converted with ToJSON; nil with an error.
	JSON []byte
}

// Documents reads a multi-document YAML (or JSON) stream, split at lines
// that start with `---`, and yields each document that has a value,
// converted with YAML 1.2 scalars. Documents holding only comments or null
// are skipped. A document that is not valid YAML yields its Doc and an
// error whose line numbers count from the start of the stream; the
// documents after it are still read, so the caller decides whether one
// bad document stops the rest.
//
// A `---` line at the start of a line always ends a document: YAML forbids
// one inside a scalar, and block scalars are indented.
func Documents(data []byte) iter.Seq2[Doc, error] {
	return func(yield func(Doc, error) bool) {
		index := 0
		start, startLine := 0, 1 // the current document
		lines := 0               // lines in the current document
		emit := func(end int) bool {
			if lines == 0 {
				return true
			}
			d := Doc{Index: index, Line: startLine}
			index++
			j, err := convert(data[start:end])
			if err != nil {
				return yield(d, shiftLines(err, startLine-1))
			}
			if j == nil {
				return true
			}
			d.JSON = j
			return yield(d, nil)
		}
		line := 1
		for off := 0; off < len(data); line++ {
			next := len(data)
			if i := bytes.IndexByte(data[off:], '\n'); i >= 0 {
				next = off + i + 1
			}
			if bare, ok := separator(data[off:next]); ok {
				if !emit(off) {
					return
				}
				// A bare `---` belongs to no document; `--- value` starts one.
				start, startLine, lines = off, line, 0
				if bare {
					start, startLine = next, line+1
				}
			}
			if start <= off {
				lines++
			}
			off = next
		}
		emit(len(data))
	}
}

// separator reports whether line starts a document, and whether it holds
// nothing else but a comment. "----" is a plain scalar, not a separator.
func separator(line []byte) (bare, ok bool) {
	rest, ok := bytes.CutPrefix(line, []byte("---"))
	if !ok || (len(rest) > 0 && !isSpace(rest[0])) {
		return false, false
	}
	rest = bytes.TrimLeft(rest, " \t\r\n")
	return len(rest) == 0 || rest[0] == '#', true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// shiftLines moves the line numbers in a yaml.v3 error on a document that
// starts after skip lines of the stream, so they point into the stream.
// yaml.v3 writes them as "yaml: line N: ..." for syntax errors and
// "line N: ... at line M" in each entry of a *yaml.TypeError.
func shiftLines(err error, skip int) error {
	if skip == 0 {
		return err
	}
	if te, ok := errors.AsType[*yaml.TypeError](err); ok {
		out := &yaml.TypeError{Errors: make([]string, len(te.Errors))}
		for i, e := range te.Errors {
			e = shiftPrefix(e, "line ", skip)
			if head, n, ok := strings.Cut(e, " already defined at line "); ok {
				if m, err := strconv.Atoi(n); err == nil {
					e = head + " already defined at line " + strconv.Itoa(m+skip)
				}
			}
			out.Errors[i] = e
		}
		return out
	}
	if msg := shiftPrefix(err.Error(), "yaml: line ", skip); msg != err.Error() {
		return &shiftedError{msg: msg, err: err}
	}
	return err
}

// shiftPrefix adds skip to the N of a message that starts with prefix+"N:".
func shiftPrefix(msg, prefix string, skip int) string {
	rest, ok := strings.CutPrefix(msg, prefix)
	if !ok {
		return msg
	}
	n, tail, ok := strings.Cut(rest, ":")
	line, err := strconv.Atoi(n)
	if !ok || err != nil {
		return msg
	}
	return fmt.Sprintf("%s%d:%s", prefix, line+skip, tail)
}

// shiftedError is a yaml.v3 error with stream line numbers.
type shiftedError struct {
	msg string
	err error
}

func (e *shiftedError) Error() string { return e.msg }
func (e *shiftedError) Unwrap() error { return e.err }
