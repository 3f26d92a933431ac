package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode"
)

// textFormat names the layout of a text generator's model.json.
const textFormat = "serai-example-ngram/1"

// TextModel is a word-level n-gram language model: for every context of up
// to Order preceding tokens seen in training, the tokens that followed it
// and how often. Generation samples from the longest context seen
// (backing off to shorter ones); scoring interpolates all orders, which is
// how the two example versions (bigram and trigram) are told apart on
// held-out text.
type TextModel struct {
	Format  string `json:"format"`
	Version string `json:"version"`
	Order   int    `json:"order"`
	// Vocab is every token, by id.
	Vocab []string `json:"vocab"`
	// Next maps a context (token ids joined by " ", "" for none) to the
	// ids that followed it and their counts, in parallel slices.
	Next     map[string]Followers `json:"next"`
	Training TextTraining         `json:"training"`

	ids map[string]int
}

// Followers is what followed one context.
type Followers struct {
	IDs    []int `json:"ids"`
	Counts []int `json:"counts"`
	total  int
}

// TextTraining records how a text model was made.
type TextTraining struct {
	Source         string  `json:"source"`
	Tokens         int     `json:"tokens"`
	HeldOutTokens  int     `json:"held_out_tokens"`
	HeldOutPerplex float64 `json:"held_out_perplexity"`
}

// Tokenize splits text into words (letters, digits, apostrophes and
// hyphens inside words) and single punctuation marks; everything else is
// a separator.
func Tokenize(s string) []string {
	var out []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	for _, r := range s {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || (r == '\'' || r == '-') && cur.Len() > 0:
			cur.WriteRune(r)
		case strings.ContainsRune(".,;:!?()", r):
			flush()
			out = append(out, string(r))
		default:
			flush()
		}
	}
	flush()
	return out
}

// Detokenize joins tokens back into text: no space before closing
// punctuation or after an opening parenthesis.
func Detokenize(prev, tok string) string {
	if prev == "" || prev == "(" || strings.ContainsAny(tok, ".,;:!?)") && len(tok) == 1 {
		return tok
	}
	return " " + tok
}

// TrainText fits an n-gram model of the given order on text, holding out
// a tenth to measure perplexity.
func TrainText(text, source, version string, order int) (*TextModel, error) {
	if order < 1 || order > 4 {
		return nil, fmt.Errorf("order %d: want 1 to 4", order)
	}
	toks := Tokenize(text)
	if len(toks) < 100 {
		return nil, fmt.Errorf("%d tokens of training text; want at least 100", len(toks))
	}
	// Every tenth block of 500 tokens is held out, so the score covers
	// the whole text rather than its last pages.
	var train, held []string
	for i := 0; i < len(toks); i += 500 {
		blk := toks[i:min(i+500, len(toks))]
		if i/500%10 == 9 {
			held = append(held, blk...)
		} else {
			train = append(train, blk...)
		}
	}
	m := &TextModel{Format: textFormat, Version: version, Order: order, ids: map[string]int{}}
	for _, t := range toks {
		if _, ok := m.ids[t]; !ok {
			m.ids[t] = len(m.Vocab)
			m.Vocab = append(m.Vocab, t)
		}
	}
	counts := map[string]map[int]int{}
	for i := range train {
		id := m.ids[train[i]]
		for n := 0; n <= order && n <= i; n++ {
			k := m.key(train[i-n : i])
			if counts[k] == nil {
				counts[k] = map[int]int{}
			}
			counts[k][id]++
		}
	}
	m.Next = make(map[string]Followers, len(counts))
	for k, c := range counts {
		ids := make([]int, 0, len(c))
		for id := range c {
			ids = append(ids, id)
		}
		sort.Ints(ids)
		f := Followers{IDs: ids, Counts: make([]int, len(ids))}
		for i, id := range ids {
			f.Counts[i] = c[id]
			f.total += c[id]
		}
		m.Next[k] = f
	}
	m.Training = TextTraining{Source: source, Tokens: len(train), HeldOutTokens: len(held), HeldOutPerplex: m.Perplexity(held)}
	return m, nil
}

func (m *TextModel) key(ctx []string) string {
	var b strings.Builder
	for i, t := range ctx {
		if i > 0 {
			b.WriteByte(' ')
		}
		id, ok := m.ids[t]
		if !ok {
			return "?" // a context with an unseen token matches nothing
		}
		fmt.Fprint(&b, id)
	}
	return b.String()
}

func (f Followers) prob(id int) float64 {
	if f.total == 0 {
		return 0
	}
	i := sort.SearchInts(f.IDs, id)
	if i < len(f.IDs) && f.IDs[i] == id {
		return float64(f.Counts[i]) / float64(f.total)
	}
	return 0
}

// Perplexity scores tokens under the model smoothed by Witten-Bell
// interpolation: each order's estimate is mixed with the next shorter
// context's in proportion to how often the context was seen versus how
// many different tokens followed it, over a uniform floor, so an unseen
// token costs but never makes the score infinite.
func (m *TextModel) Perplexity(toks []string) float64 {
	var sum float64
	uniform := 1 / float64(len(m.Vocab)+1)
	for i, t := range toks {
		id, ok := m.ids[t]
		p := uniform
		for n := 0; n <= m.Order && n <= i; n++ {
			f, seen := m.Next[m.key(toks[i-n:i])]
			if !seen || f.total == 0 {
				break
			}
			lambda := float64(f.total) / float64(f.total+len(f.IDs))
			ml := 0.0
			if ok {
				ml = f.prob(id)
			}
			p = lambda*ml + (1-lambda)*p
		}
		sum += math.Log(p)
	}
	return math.Exp(-sum / float64(len(toks)))
}

// Generate calls emit with each of up to n tokens generated after prompt,
// stopping early when emit returns false. The same prompt and seed give
// the same tokens.
func (m *TextModel) Generate(prompt []string, n int, seed uint64, emit func(tok string) bool) {
	h := fnv.New64a()
	for _, t := range prompt {
		h.Write([]byte(t))
		h.Write([]byte{0})
	}
	rng := rand.New(rand.NewPCG(seed, h.Sum64()))
	ctx := append([]string(nil), prompt...)
	for range n {
		var f Followers
		for k := min(m.Order, len(ctx)); k >= 0; k-- {
			var ok bool
			if f, ok = m.Next[m.key(ctx[len(ctx)-k:])]; ok && f.total > 0 {
				break
			}
		}
		if f.total == 0 {
			return
		}
		r := rng.IntN(f.total)
		id := f.IDs[len(f.IDs)-1]
		for i, c := range f.Counts {
			if r < c {
				id = f.IDs[i]
				break
			}
			r -= c
		}
		tok := m.Vocab[id]
		ctx = append(ctx, tok)
		if !emit(tok) {
			return
		}
	}
}

// Save writes model.json and a reproducible model.tar.gz into dir.
func (m *TextModel) Save(dir string) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return saveModelFiles(dir, append(b, '\n'))
}

// LoadTextModel reads a text model's model.json.
func LoadTextModel(dir string) (*TextModel, error) {
	b, err := os.ReadFile(filepath.Join(dir, "model.json"))
	if err != nil {
		return nil, err
	}
	var m TextModel
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("model.json: %w", err)
	}
	if m.Format != textFormat {
		return nil, fmt.Errorf("model.json: format %q, want %q", m.Format, textFormat)
	}
	if m.Order < 1 || len(m.Vocab) == 0 {
		return nil, errors.New("model.json: text model has no order or vocabulary")
	}
	m.ids = make(map[string]int, len(m.Vocab))
	for i, t := range m.Vocab {
		m.ids[t] = i
	}
	for k, f := range m.Next {
		if len(f.IDs) != len(f.Counts) {
			return nil, fmt.Errorf("model.json: context %q: ids and counts differ in length", k)
		}
		for i, id := range f.IDs {
			if id < 0 || id >= len(m.Vocab) || f.Counts[i] <= 0 || i > 0 && f.IDs[i-1] >= id {
				return nil, fmt.Errorf("model.json: context %q: bad follower %d", k, i)
			}
			f.total += f.Counts[i]
		}
		m.Next[k] = f
	}
	return &m, nil
}

// modelFormatOf reads only the format field of dir/model.json.
func modelFormatOf(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "model.json"))
	if err != nil {
		return "", err
	}
	var v struct {
		Format string `json:"format"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return "", fmt.Errorf("model.json: %w", err)
	}
	return v.Format, nil
}
