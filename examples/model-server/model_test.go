package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

const irisPath = "../data/iris.csv"

var iris = sync.OnceValues(func() (*Dataset, error) { return ReadCSVFile(irisPath) })

func loadIris(t *testing.T) *Dataset {
	t.Helper()
	d, err := iris()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// trained memoizes the two README models: training takes a moment and
// several tests need them.
var trained sync.Map

func trainIris(t *testing.T, version, spec string) *Model {
	t.Helper()
	if m, ok := trained.Load(version + "/" + spec); ok {
		return m.(*Model)
	}
	d := loadIris(t)
	feats, err := ResolveFeatures(spec, d.Columns)
	if err != nil {
		t.Fatal(err)
	}
	opts := DefaultTrainOptions()
	opts.Version, opts.Features = version, feats
	m, err := Train(d, opts)
	if err != nil {
		t.Fatal(err)
	}
	trained.Store(version+"/"+spec, m)
	return m
}

func fullAccuracy(m *Model, d *Dataset) float64 {
	idx := make([]int, len(d.Y))
	for i := range idx {
		idx[i] = i
	}
	return m.accuracy(d, idx)
}

func TestIrisData(t *testing.T) {
	d := loadIris(t)
	if len(d.X) != 150 {
		t.Fatalf("%d rows, want 150", len(d.X))
	}
	want := []string{"sepal_length", "sepal_width", "petal_length", "petal_width"}
	if !slices.Equal(d.Columns, want) {
		t.Errorf("columns = %v, want %v", d.Columns, want)
	}
	counts := map[string]int{}
	sums := make([]float64, 4)
	for i, row := range d.X {
		counts[d.Y[i]]++
		for j, v := range row {
			sums[j] += v
		}
	}
	for _, c := range []string{"Iris-setosa", "Iris-versicolor", "Iris-virginica"} {
		if counts[c] != 50 {
			t.Errorf("%s: %d rows, want 50", c, counts[c])
		}
	}
	// Column sums of Fisher's data (UCI's copy with the two errata of its
	// iris.names applied: rows 35 and 38).
	for j, s := range []float64{876.5, 458.6, 563.7, 179.9} {
		if d := sums[j] - s; d > 1e-6 || d < -1e-6 {
			t.Errorf("column %s sums to %.1f, want %.1f", want[j], sums[j], s)
		}
	}
	spot := map[int]string{
		0:   "5.1,3.5,1.4,0.2,Iris-setosa",
		34:  "4.9,3.1,1.5,0.2,Iris-setosa",
		37:  "4.9,3.6,1.4,0.1,Iris-setosa",
		50:  "7.0,3.2,4.7,1.4,Iris-versicolor",
		100: "6.3,3.3,6.0,2.5,Iris-virginica",
		149: "5.9,3.0,5.1,1.8,Iris-virginica",
	}
	for i, line := range spot {
		f := strings.Split(line, ",")
		got := make([]string, 0, 5)
		for _, v := range d.X[i] {
			got = append(got, strconv.FormatFloat(v, 'f', 1, 64))
		}
		got = append(got, d.Y[i])
		if strings.Join(got, ",") != strings.Join(f, ",") {
			t.Errorf("row %d = %v, want %s", i+1, got, line)
		}
	}
}

func TestResolveFeatures(t *testing.T) {
	cols := []string{"sepal_length", "sepal_width", "petal_length", "petal_width"}
	for spec, want := range map[string][]string{
		"all":                      cols,
		"":                         cols,
		"sepal":                    {"sepal_length", "sepal_width"},
		"petal_width,sepal_length": {"sepal_length", "petal_width"},
		"sepal,sepal_width":        {"sepal_length", "sepal_width"},
	} {
		got, err := ResolveFeatures(spec, cols)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ResolveFeatures(%q) = %v, %v; want %v", spec, got, err, want)
		}
	}
	if _, err := ResolveFeatures("stem", cols); err == nil {
		t.Error("unknown feature accepted")
	}
}

// TestTrainAccuracy pins what the two README artifacts are for: v1 (sepal
// only) is a visibly worse model than v2 (all four features).
func TestTrainAccuracy(t *testing.T) {
	d := loadIris(t)
	v1 := trainIris(t, "v1", "sepal")
	v2 := trainIris(t, "v2", "all")
	a1, a2 := fullAccuracy(v1, d), fullAccuracy(v2, d)
	t.Logf("v1: train %.3f test %.3f all %.3f", v1.Training.TrainAccuracy, v1.Training.TestAccuracy, a1)
	t.Logf("v2: train %.3f test %.3f all %.3f", v2.Training.TrainAccuracy, v2.Training.TestAccuracy, a2)
	if a1 < 0.72 || a1 > 0.88 {
		t.Errorf("v1 accuracy on all rows = %.3f, want 0.72..0.88", a1)
	}
	if a2 < 0.95 {
		t.Errorf("v2 accuracy on all rows = %.3f, want >= 0.95", a2)
	}
	if v1.Training.TestAccuracy > 0.9 || v2.Training.TestAccuracy < 0.9 {
		t.Errorf("held-out accuracy v1 %.3f, v2 %.3f: want v1 <= 0.9 <= v2", v1.Training.TestAccuracy, v2.Training.TestAccuracy)
	}
	if v1.Training.Rows+v1.Training.TestRows != 150 || v1.Training.TestRows != 30 {
		t.Errorf("split %d/%d, want 120/30", v1.Training.Rows, v1.Training.TestRows)
	}

	// Same seed, same model: artifacts are reproducible.
	opts := DefaultTrainOptions()
	opts.Version, opts.Features = "v1", v1.Features
	again, err := Train(d, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again.Bias, v1.Bias) || !slices.Equal(again.Weights[0], v1.Weights[0]) {
		t.Error("training is not deterministic")
	}
}

// TestVersionsDisagree checks the row the README offers for telling the
// versions apart by label alone.
func TestVersionsDisagree(t *testing.T) {
	v1 := trainIris(t, "v1", "sepal")
	v2 := trainIris(t, "v2", "all")
	row := []float64{6.3, 2.5, 5.0, 1.9} // a virginica
	in1, err := v1.Inputs(row)
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := v1.Predict(in1), v2.Predict(row)
	if p1.Label != "Iris-versicolor" || p2.Label != "Iris-virginica" {
		t.Errorf("row %v: v1 says %s, v2 says %s; want versicolor vs virginica", row, p1.Label, p2.Label)
	}
}

func TestSaveLoad(t *testing.T) {
	m := trainIris(t, "v2", "all")
	dir := t.TempDir()
	if err := m.Save(dir); err != nil {
		t.Fatal(err)
	}
	got, err := LoadModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != "v2" || !slices.Equal(got.Features, m.Features) || !slices.Equal(got.Classes, m.Classes) {
		t.Errorf("loaded %+v", got)
	}
	row := []float64{5.9, 3.0, 5.1, 1.8}
	if a, b := got.Predict(row), m.Predict(row); a.Label != b.Label || a.Probabilities[a.Label] != b.Probabilities[b.Label] {
		t.Errorf("prediction changed across save/load: %v vs %v", a, b)
	}

	// The archive holds exactly model.json at its root, same bytes.
	raw, err := os.ReadFile(filepath.Join(dir, "model.json"))
	if err != nil {
		t.Fatal(err)
	}
	tgz, err := os.ReadFile(filepath.Join(dir, "model.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		b, _ := io.ReadAll(tr)
		if h.Name == "model.json" && !bytes.Equal(b, raw) {
			t.Error("model.json in the archive differs from the file")
		}
	}
	if !slices.Equal(names, []string{"model.json"}) {
		t.Errorf("archive entries = %v, want [model.json]", names)
	}

	// Reproducible archive: saving again gives the same bytes.
	dir2 := t.TempDir()
	if err := m.Save(dir2); err != nil {
		t.Fatal(err)
	}
	tgz2, _ := os.ReadFile(filepath.Join(dir2, "model.tar.gz"))
	if !bytes.Equal(tgz, tgz2) {
		t.Error("model.tar.gz is not reproducible")
	}
}

func TestLoadModelRejectsBadFiles(t *testing.T) {
	for name, body := range map[string]string{
		"not json":    "{",
		"wrong shape": `{"format":"serai-example-softmax/1","version":"x","columns":["a"],"features":["a"],"classes":["p","q"],"mean":[0],"std":[1],"weights":[[1]],"bias":[0,0]}`,
		"bad feature": `{"format":"serai-example-softmax/1","version":"x","columns":["a"],"features":["b"],"classes":["p","q"],"mean":[0],"std":[1],"weights":[[1],[1]],"bias":[0,0]}`,
		"old format":  `{"format":"other","features":["a"],"columns":["a"]}`,
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "model.json"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadModel(dir); err == nil {
			t.Errorf("%s: LoadModel accepted %s", name, body)
		}
	}
}
