package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// modelFormat names the layout of model.json so a future change can be
// detected instead of mis-read.
const modelFormat = "serai-example-softmax/1"

// Model is a multinomial logistic regression over standardized features.
// It is what model.json holds.
type Model struct {
	Format  string `json:"format"`
	Version string `json:"version"`
	// Columns are all feature columns of the training data, in order. A
	// request row may carry either all of them (the model picks its own) or
	// exactly Features; that lets one request body go to every version.
	Columns  []string `json:"columns"`
	Features []string `json:"features"`
	Classes  []string `json:"classes"`
	// Mean and Std standardize each feature before the linear layer.
	Mean []float64 `json:"mean"`
	Std  []float64 `json:"std"`
	// Weights has one row per class, one column per feature.
	Weights  [][]float64 `json:"weights"`
	Bias     []float64   `json:"bias"`
	Training Training    `json:"training"`

	featureIdx []int // index into Columns of each feature
}

// Training records how a model was made, for humans and for tests.
type Training struct {
	Rows          int     `json:"rows"`
	TestRows      int     `json:"test_rows"`
	Epochs        int     `json:"epochs"`
	LearningRate  float64 `json:"learning_rate"`
	L2            float64 `json:"l2"`
	Seed          uint64  `json:"seed"`
	TrainAccuracy float64 `json:"train_accuracy"`
	TestAccuracy  float64 `json:"test_accuracy"`
}

// Dataset is a labelled table of numeric features.
type Dataset struct {
	Columns []string
	X       [][]float64 // one row per sample, len(Columns) values
	Y       []string
}

// ReadCSV reads a CSV with a header row; the last column is the label and
// all others are numeric features.
func ReadCSV(r io.Reader) (*Dataset, error) {
	recs, err := csv.NewReader(r).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(recs) < 2 {
		return nil, errors.New("data set needs a header and at least one row")
	}
	head := recs[0]
	if len(head) < 2 {
		return nil, errors.New("data set needs at least one feature and a label column")
	}
	d := &Dataset{Columns: slices.Clone(head[:len(head)-1])}
	for i, rec := range recs[1:] {
		row := make([]float64, len(d.Columns))
		for j := range d.Columns {
			v, err := strconv.ParseFloat(strings.TrimSpace(rec[j]), 64)
			if err != nil {
				return nil, fmt.Errorf("row %d column %s: %w", i+2, d.Columns[j], err)
			}
			row[j] = v
		}
		d.X = append(d.X, row)
		d.Y = append(d.Y, strings.TrimSpace(rec[len(rec)-1]))
	}
	return d, nil
}

// ReadCSVFile is ReadCSV on a file.
func ReadCSVFile(path string) (*Dataset, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d, err := ReadCSV(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// TrainOptions control Train.
type TrainOptions struct {
	Version      string
	Features     []string // column names; empty = all
	Epochs       int
	LearningRate float64
	L2           float64
	Seed         uint64
	TestFraction float64 // held out per class, for the reported test accuracy
}

// DefaultTrainOptions are the settings the README's artifacts are built with.
func DefaultTrainOptions() TrainOptions {
	return TrainOptions{Epochs: 3000, LearningRate: 0.1, L2: 1e-4, Seed: 1, TestFraction: 0.2}
}

// ResolveFeatures turns a feature spec into column names: "all", a prefix
// shared by columns ("sepal" → sepal_length, sepal_width) or a comma list.
func ResolveFeatures(spec string, columns []string) ([]string, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" || spec == "all" {
		return slices.Clone(columns), nil
	}
	var out []string
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if slices.Contains(columns, part) {
			out = append(out, part)
			continue
		}
		n := 0
		for _, c := range columns {
			if strings.HasPrefix(c, part+"_") {
				out = append(out, c)
				n++
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("feature %q matches no column of %v", part, columns)
		}
	}
	// Keep dataset order whatever order the spec used, so the same
	// features always make the same model.
	slices.SortFunc(out, func(a, b string) int { return slices.Index(columns, a) - slices.Index(columns, b) })
	return slices.Compact(out), nil
}

// Train fits a softmax regression by full-batch gradient descent. The split
// into training and test rows is stratified and drawn from opts.Seed, so the
// same inputs always give the same model.
func Train(d *Dataset, opts TrainOptions) (*Model, error) {
	feats := opts.Features
	if len(feats) == 0 {
		feats = d.Columns
	}
	m := &Model{
		Format:   modelFormat,
		Version:  opts.Version,
		Columns:  slices.Clone(d.Columns),
		Features: slices.Clone(feats),
	}
	if err := m.index(); err != nil {
		return nil, err
	}
	for _, y := range d.Y {
		if !slices.Contains(m.Classes, y) {
			m.Classes = append(m.Classes, y)
		}
	}
	slices.Sort(m.Classes)
	if len(m.Classes) < 2 {
		return nil, errors.New("need at least two classes")
	}

	trainIdx, testIdx := stratifiedSplit(d.Y, opts.TestFraction, opts.Seed)
	nf, nc := len(feats), len(m.Classes)

	// Standardize with training statistics only.
	m.Mean = make([]float64, nf)
	m.Std = make([]float64, nf)
	for j := range nf {
		var s, ss float64
		for _, i := range trainIdx {
			v := d.X[i][m.featureIdx[j]]
			s += v
			ss += v * v
		}
		n := float64(len(trainIdx))
		m.Mean[j] = s / n
		m.Std[j] = math.Sqrt(math.Max(ss/n-m.Mean[j]*m.Mean[j], 1e-12))
	}
	xs := make([][]float64, len(trainIdx))
	ys := make([]int, len(trainIdx))
	for k, i := range trainIdx {
		xs[k] = m.standardize(m.selectRow(d.X[i]))
		ys[k] = slices.Index(m.Classes, d.Y[i])
	}

	m.Weights = make([][]float64, nc)
	for c := range m.Weights {
		m.Weights[c] = make([]float64, nf)
	}
	m.Bias = make([]float64, nc)
	gw := make([][]float64, nc)
	for c := range gw {
		gw[c] = make([]float64, nf)
	}
	gb := make([]float64, nc)
	p := make([]float64, nc)
	n := float64(len(xs))
	for range opts.Epochs {
		for c := range nc {
			clear(gw[c])
		}
		clear(gb)
		for k, x := range xs {
			m.probs(x, p)
			for c := range nc {
				g := p[c]
				if c == ys[k] {
					g--
				}
				gb[c] += g
				for j := range nf {
					gw[c][j] += g * x[j]
				}
			}
		}
		for c := range nc {
			m.Bias[c] -= opts.LearningRate * gb[c] / n
			for j := range nf {
				m.Weights[c][j] -= opts.LearningRate * (gw[c][j]/n + opts.L2*m.Weights[c][j])
			}
		}
	}

	m.Training = Training{
		Rows:          len(trainIdx),
		TestRows:      len(testIdx),
		Epochs:        opts.Epochs,
		LearningRate:  opts.LearningRate,
		L2:            opts.L2,
		Seed:          opts.Seed,
		TrainAccuracy: m.accuracy(d, trainIdx),
		TestAccuracy:  m.accuracy(d, testIdx),
	}
	return m, nil
}

// stratifiedSplit holds out the same fraction of every class.
func stratifiedSplit(labels []string, frac float64, seed uint64) (train, test []int) {
	rng := rand.New(rand.NewPCG(seed, seed^0x5e7a1))
	byClass := map[string][]int{}
	var order []string
	for i, y := range labels {
		if _, ok := byClass[y]; !ok {
			order = append(order, y)
		}
		byClass[y] = append(byClass[y], i)
	}
	slices.Sort(order)
	for _, y := range order {
		idx := byClass[y]
		rng.Shuffle(len(idx), func(a, b int) { idx[a], idx[b] = idx[b], idx[a] })
		k := int(math.Round(frac * float64(len(idx))))
		test = append(test, idx[:k]...)
		train = append(train, idx[k:]...)
	}
	slices.Sort(train)
	slices.Sort(test)
	return train, test
}

func (m *Model) accuracy(d *Dataset, idx []int) float64 {
	if len(idx) == 0 {
		return 0
	}
	ok := 0
	for _, i := range idx {
		if m.Predict(m.selectRow(d.X[i])).Label == d.Y[i] {
			ok++
		}
	}
	return float64(ok) / float64(len(idx))
}

// index validates the model and maps features to columns.
func (m *Model) index() error {
	if len(m.Features) == 0 {
		return errors.New("model has no features")
	}
	m.featureIdx = make([]int, len(m.Features))
	for j, f := range m.Features {
		i := slices.Index(m.Columns, f)
		if i < 0 {
			return fmt.Errorf("feature %q is not a column (%v)", f, m.Columns)
		}
		m.featureIdx[j] = i
	}
	return nil
}

func (m *Model) selectRow(full []float64) []float64 {
	out := make([]float64, len(m.featureIdx))
	for j, i := range m.featureIdx {
		out[j] = full[i]
	}
	return out
}

// Inputs turns a request row into the model's features: a row of all
// Columns is narrowed to Features, a row of exactly Features is used as is.
func (m *Model) Inputs(row []float64) ([]float64, error) {
	switch len(row) {
	case len(m.Features):
		return row, nil
	case len(m.Columns):
		return m.selectRow(row), nil
	default:
		return nil, fmt.Errorf("row has %d values; want %d (%s) or %d (%s)",
			len(row), len(m.Features), strings.Join(m.Features, ","), len(m.Columns), strings.Join(m.Columns, ","))
	}
}

func (m *Model) standardize(x []float64) []float64 {
	out := make([]float64, len(x))
	for j, v := range x {
		out[j] = (v - m.Mean[j]) / m.Std[j]
	}
	return out
}

// probs writes the softmax of the class scores of a standardized x into p.
func (m *Model) probs(x, p []float64) {
	maxScore := math.Inf(-1)
	for c := range m.Weights {
		s := m.Bias[c]
		for j, w := range m.Weights[c] {
			s += w * x[j]
		}
		p[c] = s
		maxScore = math.Max(maxScore, s)
	}
	var sum float64
	for c := range p {
		p[c] = math.Exp(p[c] - maxScore) // shifted for numerical stability
		sum += p[c]
	}
	for c := range p {
		p[c] /= sum
	}
}

// Prediction is the answer for one row.
type Prediction struct {
	Label         string             `json:"label"`
	Probabilities map[string]float64 `json:"probabilities"`
}

// Predict classifies one row of the model's features (raw, not standardized).
func (m *Model) Predict(features []float64) Prediction {
	p := make([]float64, len(m.Classes))
	m.probs(m.standardize(features), p)
	best := 0
	out := Prediction{Probabilities: make(map[string]float64, len(p))}
	for c, v := range p {
		out.Probabilities[m.Classes[c]] = v
		if v > p[best] {
			best = c
		}
	}
	out.Label = m.Classes[best]
	return out
}

// LoadModel reads model.json from dir.
func LoadModel(dir string) (*Model, error) {
	b, err := os.ReadFile(filepath.Join(dir, "model.json"))
	if err != nil {
		return nil, err
	}
	var m Model
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("model.json: %w", err)
	}
	if m.Format != modelFormat {
		return nil, fmt.Errorf("model.json: format %q, want %q", m.Format, modelFormat)
	}
	if err := m.index(); err != nil {
		return nil, fmt.Errorf("model.json: %w", err)
	}
	nf, nc := len(m.Features), len(m.Classes)
	if nc < 2 || len(m.Bias) != nc || len(m.Weights) != nc || len(m.Mean) != nf || len(m.Std) != nf {
		return nil, errors.New("model.json: parameter shapes do not match features and classes")
	}
	for _, w := range m.Weights {
		if len(w) != nf {
			return nil, errors.New("model.json: weight row length does not match features")
		}
	}
	return &m, nil
}

// Save writes model.json and model.tar.gz (model.json at the archive root)
// into dir. The archive is byte-for-byte reproducible (fixed times and
// owners) so its sha256 can be pinned in a serai model.
func (m *Model) Save(dir string) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return saveModelFiles(dir, append(b, '\n'))
}

// saveModelFiles writes b as dir/model.json and as the only file of
// dir/model.tar.gz.
func saveModelFiles(dir string, b []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "model.json"), b, 0o644); err != nil {
		return err
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	hdr := &tar.Header{
		Name:     "model.json",
		Mode:     0o644,
		Size:     int64(len(b)),
		ModTime:  time.Unix(0, 0),
		Typeflag: tar.TypeReg,
		Format:   tar.FormatUSTAR,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if _, err := tw.Write(b); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "model.tar.gz"), buf.Bytes(), 0o644)
}
