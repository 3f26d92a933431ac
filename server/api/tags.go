package api

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"

	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
)

// resolveARN finds the record an ARN names. ARNs carry the name lower-
// cased and names are unique ignoring case, so the record is the one
// whose name lower-cases to the ARN's.
func (h *Handler) resolveARN(ctx context.Context, path, arn string) (records.Kind, string, error) {
	var f fieldErrors
	if arn == "" {
		f.null(path)
		return "", "", f.err()
	}
	kind, _, lower, ok := h.parseARN(arn)
	if !ok {
		f.bad(path, arn, "Member must be the ARN of a model, endpoint-config or endpoint in region "+h.cfg.Region+" of account "+h.cfg.Account)
		return "", "", f.err()
	}
	notFound := validationf("Could not find resource %q.", arn)
	pairs, err := h.cfg.Store.KV.List(ctx, string(kind))
	if err != nil {
		return "", "", err
	}
	for _, p := range pairs {
		name := strings.TrimPrefix(p.Key, string(kind))
		if !strings.Contains(name, "/") && strings.ToLower(name) == lower {
			return kind, name, nil
		}
	}
	return "", "", notFound
}

// updateTags changes the tags of the record an ARN names, with
// check-and-set (a reconciler writing the endpoint concurrently makes
// this re-read and re-apply).
func (h *Handler) updateTags(ctx context.Context, arn string, fn func(tags []smapi.Tag) ([]smapi.Tag, error)) ([]smapi.Tag, error) {
	kind, name, err := h.resolveARN(ctx, "resourceArn", arn)
	if err != nil {
		return nil, err
	}
	var out []smapi.Tag
	apply := func(tags *[]smapi.Tag) error {
		t, err := fn(append([]smapi.Tag(nil), (*tags)...))
		if err != nil {
			return err
		}
		*tags, out = t, t
		return nil
	}
	switch kind {
	case records.KindModel:
		_, err = records.Update(ctx, h.cfg.Store, kind, name, func(v *records.Model) error { return apply(&v.Tags) })
	case records.KindEndpointConfig:
		_, err = records.Update(ctx, h.cfg.Store, kind, name, func(v *records.EndpointConfig) error { return apply(&v.Tags) })
	default:
		_, err = records.Update(ctx, h.cfg.Store, kind, name, func(v *records.Endpoint) error { return apply(&v.Tags) })
	}
	if errors.Is(err, records.ErrNotFound) {
		return nil, validationf("Could not find resource %q.", arn)
	}
	return out, err
}

func (h *Handler) addTags(ctx context.Context, in *smapi.AddTagsInput) (*smapi.AddTagsOutput, error) {
	var f fieldErrors
	if in.Tags == nil {
		f.null("tags")
	}
	f.tags("tags", in.Tags)
	if in.ResourceArn == "" {
		f.null("resourceArn")
	}
	if err := f.err(); err != nil {
		return nil, err
	}
	_, err := h.updateTags(ctx, in.ResourceArn, func(tags []smapi.Tag) ([]smapi.Tag, error) {
		for _, t := range in.Tags {
			replaced := false
			for i := range tags {
				if tags[i].Key == t.Key {
					tags[i].Value, replaced = t.Value, true
				}
			}
			if !replaced {
				tags = append(tags, t)
			}
		}
		if len(tags) > smapi.MaxTagsPerResource {
			return nil, limitf("Resource %q would have %d tags; at most %d are allowed.", in.ResourceArn, len(tags), smapi.MaxTagsPerResource)
		}
		return tags, nil
	})
	if err != nil {
		return nil, err
	}
	return &smapi.AddTagsOutput{Tags: in.Tags}, nil
}

func (h *Handler) deleteTags(ctx context.Context, in *smapi.DeleteTagsInput) (*struct{}, error) {
	var f fieldErrors
	if in.ResourceArn == "" {
		f.null("resourceArn")
	}
	switch {
	case in.TagKeys == nil:
		f.null("tagKeys")
	case len(in.TagKeys) == 0:
		f.bad("tagKeys", "[]", "Member must have length greater than or equal to 1")
	case len(in.TagKeys) > smapi.MaxTagsPerResource:
		f.bad("tagKeys", len(in.TagKeys), "Member must have length less than or equal to 50")
	}
	for i, k := range in.TagKeys {
		if k == "" || len(k) > smapi.MaxTagKeyLength {
			f.bad(member("tagKeys", i), k, "Member must have length between 1 and 128")
		}
	}
	if err := f.err(); err != nil {
		return nil, err
	}
	_, err := h.updateTags(ctx, in.ResourceArn, func(tags []smapi.Tag) ([]smapi.Tag, error) {
		out := tags[:0]
		for _, t := range tags {
			if !contains(in.TagKeys, t.Key) {
				out = append(out, t)
			}
		}
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	return &struct{}{}, nil
}

func (h *Handler) listTags(ctx context.Context, in *smapi.ListTagsInput) (*smapi.ListTagsOutput, error) {
	var f fieldErrors
	if in.ResourceArn == "" {
		f.null("resourceArn")
	}
	max := smapi.MinTagsMaxResults
	if in.MaxResults != nil {
		if *in.MaxResults < smapi.MinTagsMaxResults {
			f.bad("maxResults", *in.MaxResults, "Member must have value greater than or equal to 50")
		}
		max = *in.MaxResults
	}
	start := 0
	if in.NextToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(in.NextToken)
		n, err2 := strconv.Atoi(string(b))
		if err != nil || err2 != nil || n < 0 {
			return nil, validationf("Invalid pagination token.")
		}
		start = n
	}
	if err := f.err(); err != nil {
		return nil, err
	}
	kind, name, err := h.resolveARN(ctx, "resourceArn", in.ResourceArn)
	if err != nil {
		return nil, err
	}
	var tags []smapi.Tag
	switch kind {
	case records.KindModel:
		var v records.Model
		_, err = h.cfg.Store.Get(ctx, kind, name, &v)
		tags = v.Tags
	case records.KindEndpointConfig:
		var v records.EndpointConfig
		_, err = h.cfg.Store.Get(ctx, kind, name, &v)
		tags = v.Tags
	default:
		var v records.Endpoint
		_, err = h.cfg.Store.Get(ctx, kind, name, &v)
		tags = v.Tags
	}
	if errors.Is(err, records.ErrNotFound) {
		return nil, validationf("Could not find resource %q.", in.ResourceArn)
	}
	if err != nil {
		return nil, err
	}
	out := &smapi.ListTagsOutput{Tags: []smapi.Tag{}}
	if start < len(tags) {
		end := min(len(tags), start+max)
		out.Tags = append(out.Tags, tags[start:end]...)
		if end < len(tags) {
			out.NextToken = base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(end)))
		}
	}
	return out, nil
}
