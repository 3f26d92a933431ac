package sigv4

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
)

// The key-file format is shared by the router (router.LoadSigV4Keys) and
// the control-plane API, so one file can serve both.

// LoadKeys reads a static key table (access key ID -> secret) from a file that
// only its owner (and group) may read. Two formats:
//
//	# text: one "ACCESS_KEY_ID SECRET_ACCESS_KEY" pair a line,
//	# blank lines and lines starting with # ignored
//	AKIAEXAMPLE0000001 wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
//
//	{"AKIAEXAMPLE0000001": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
//
// (JSON when the first non-blank character is '{'). Access key IDs are
// 1–128 letters, digits, '_', '-' or '.'; secrets at least 16 characters
// without spaces or control characters. A repeated ID, an empty table, or
// a file other users may read or write is an error. Errors name the file
// and line, never a secret.
func LoadKeys(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm()&0o007 != 0 {
		return nil, fmt.Errorf("%s holds secrets but other users may access it (mode %04o); chmod o-rwx it (e.g. 0600 or 0640)", path, st.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, 4<<20+1))
	if err != nil {
		return nil, err
	}
	if len(data) > 4<<20 {
		return nil, fmt.Errorf("%s is larger than 4 MiB", path)
	}
	var keys map[string]string
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		keys, err = parseKeysJSON(t)
	} else {
		keys, err = parseKeysText(data)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s holds no key", path)
	}
	return keys, nil
}

func parseKeysText(data []byte) (map[string]string, error) {
	keys := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for line := 1; sc.Scan(); line++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' {
			continue
		}
		fields := strings.Fields(l)
		if len(fields) != 2 {
			return nil, fmt.Errorf("line %d: want \"ACCESS_KEY_ID SECRET\", got %d fields", line, len(fields))
		}
		if err := addKey(keys, fields[0], fields[1]); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return keys, nil
}

func parseKeysJSON(data []byte) (map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("JSON key table must be an object of \"ACCESS_KEY_ID\": \"SECRET\"")
	}
	keys := map[string]string{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, errors.New("JSON key table is malformed")
		}
		id := tok.(string)
		var secret string
		if err := dec.Decode(&secret); err != nil {
			return nil, errors.New("JSON key table: every secret must be a string")
		}
		if err := addKey(keys, id, secret); err != nil {
			return nil, err
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, errors.New("JSON key table is malformed")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("JSON key table has data after the object")
	}
	return keys, nil
}

func addKey(keys map[string]string, id, secret string) error {
	if len(id) == 0 || len(id) > 128 {
		return errors.New("access key ID must be 1 to 128 characters")
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			// Not quoted: a line with its fields swapped would show the secret.
			return errors.New("access key ID may hold only letters, digits, '_', '-' and '.' (is the secret first?)")
		}
	}
	if _, dup := keys[id]; dup {
		return fmt.Errorf("access key ID %s appears twice", id)
	}
	if len(secret) < 16 {
		return fmt.Errorf("the secret of %s is shorter than 16 characters", id)
	}
	for i := 0; i < len(secret); i++ {
		if c := secret[i]; c <= ' ' || c == 0x7f {
			return fmt.Errorf("the secret of %s holds a space or control character", id)
		}
	}
	keys[id] = secret
	return nil
}
