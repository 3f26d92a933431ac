package sigv4

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadKeys(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	for _, p := range []string{
		write("text", "# keys\n\nAKIAEXAMPLE1 "+secret+"\n", 0o600),
		write("json", `{"AKIAEXAMPLE1": "`+secret+`"}`, 0o640),
	} {
		keys, err := LoadKeys(p)
		if err != nil || len(keys) != 1 || keys["AKIAEXAMPLE1"] != secret {
			t.Fatalf("%s: %v %v", p, keys, err)
		}
	}
	for name, c := range map[string]struct {
		content string
		mode    os.FileMode
		want    string
	}{
		"world": {"AKIAEXAMPLE1 " + secret, 0o604, "other users may access it"},
		"dup":   {"A " + secret + "\nA " + secret, 0o600, "appears twice"},
		"short": {"A short", 0o600, "shorter than 16"},
		"swap":  {secret + " A", 0o600, "is the secret first?"},
		"empty": {"# nothing\n", 0o600, "holds no key"},
		"json":  {`{"A": 5}`, 0o600, "must be a string"},
	} {
		_, err := LoadKeys(write(name, c.content, c.mode))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), secret) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
