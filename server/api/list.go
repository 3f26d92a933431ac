package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/seraihq/serai/internal/names"
	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
)

// listItem is what the List operations filter, sort and page on.
type listItem struct {
	name     string
	created  time.Time
	modified time.Time
	status   string
}

// listQuery is the paging, sorting and filtering members every List
// operation shares (ListEndpoints adds the last three).
type listQuery struct {
	sortBy, sortOrder, nextToken, nameContains string
	maxResults                                 *int
	createdBefore, createdAfter                *smapi.Time
	modifiedBefore, modifiedAfter              *smapi.Time
	status                                     string
	endpoints                                  bool // SortBy Status and StatusEquals allowed
}

// pageToken is NextToken's content: where the previous page ended, in
// which order. Keyset paging: records created or deleted between pages
// neither repeat nor shift the pages.
type pageToken struct {
	SortBy  string `json:"b"`
	Order   string `json:"o"`
	Created int64  `json:"t,omitempty"`
	Status  string `json:"s,omitempty"`
	Name    string `json:"n"`
}

var nameContainsRE = regexp.MustCompile(`^[a-zA-Z0-9-]+$`)

var endpointStatuses = []string{
	smapi.StatusOutOfService, smapi.StatusCreating, smapi.StatusUpdating, smapi.StatusSystemUpdating,
	smapi.StatusRollingBack, smapi.StatusInService, smapi.StatusDeleting, smapi.StatusFailed, smapi.StatusUpdateRollbackFailed,
}

// check validates the query and fills in SageMaker's defaults.
func (q *listQuery) check() (*pageToken, error) {
	var f fieldErrors
	sortKeys := "[Name, CreationTime]"
	switch q.sortBy {
	case "":
		q.sortBy = smapi.SortByCreationTime
	case smapi.SortByName, smapi.SortByCreationTime:
	case smapi.SortByStatus:
		if !q.endpoints {
			f.bad("sortBy", q.sortBy, "Member must satisfy enum value set: "+sortKeys)
		}
	default:
		if q.endpoints {
			sortKeys = "[Name, CreationTime, Status]"
		}
		f.bad("sortBy", q.sortBy, "Member must satisfy enum value set: "+sortKeys)
	}
	switch q.sortOrder {
	case "":
		q.sortOrder = smapi.SortOrderDescending
	case smapi.SortOrderAscending, smapi.SortOrderDescending:
	default:
		f.bad("sortOrder", q.sortOrder, "Member must satisfy enum value set: [Ascending, Descending]")
	}
	if m := q.maxResults; m != nil && (*m < 1 || *m > smapi.MaxListMaxResults) {
		f.bad("maxResults", *m, "Member must have value between 1 and 100")
	}
	if n := q.nameContains; n != "" && (len(n) > 63 || !nameContainsRE.MatchString(n)) {
		f.bad("nameContains", n, "Member must satisfy regular expression pattern: [a-zA-Z0-9-]+ and have length less than or equal to 63")
	}
	if s := q.status; s != "" && !contains(endpointStatuses, s) {
		f.bad("statusEquals", s, "Member must satisfy enum value set: ["+strings.Join(endpointStatuses, ", ")+"]")
	}
	if len(q.nextToken) > smapi.MaxNextTokenLength {
		f.bad("nextToken", "...", "Member must have length less than or equal to 8192")
	}
	if err := f.err(); err != nil {
		return nil, err
	}
	if q.nextToken == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(q.nextToken)
	var t pageToken
	if err == nil {
		err = json.Unmarshal(b, &t)
	}
	if err != nil || t.SortBy != q.sortBy || t.Order != q.sortOrder {
		return nil, validationf("Invalid pagination token: it does not come from a previous page of this list with the same SortBy and SortOrder.")
	}
	return &t, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// page filters, sorts and cuts items; it returns the indexes of the page
// and the token of the next one ("" on the last page).
func (q *listQuery) page(items []listItem) ([]int, string, error) {
	after, err := q.check()
	if err != nil {
		return nil, "", err
	}
	max := smapi.DefaultListMaxResults
	if q.maxResults != nil {
		max = *q.maxResults
	}
	less := func(a, b *listItem) bool {
		switch q.sortBy {
		case smapi.SortByCreationTime:
			if !a.created.Equal(b.created) {
				return a.created.Before(b.created)
			}
		case smapi.SortByStatus:
			if a.status != b.status {
				return a.status < b.status
			}
		}
		return a.name < b.name
	}
	if q.sortOrder == smapi.SortOrderDescending {
		asc := less
		less = func(a, b *listItem) bool { return asc(b, a) }
	}
	var mark *listItem
	if after != nil {
		mark = &listItem{name: after.Name, created: time.Unix(0, after.Created), status: after.Status}
	}
	var idx []int
	for i := range items {
		it := &items[i]
		switch {
		case q.nameContains != "" && !strings.Contains(strings.ToLower(it.name), strings.ToLower(q.nameContains)),
			q.createdBefore != nil && !it.created.Before(q.createdBefore.Time),
			q.createdAfter != nil && !it.created.After(q.createdAfter.Time),
			q.modifiedBefore != nil && !it.modified.Before(q.modifiedBefore.Time),
			q.modifiedAfter != nil && !it.modified.After(q.modifiedAfter.Time),
			q.status != "" && it.status != q.status,
			mark != nil && !less(mark, it):
			continue
		}
		idx = append(idx, i)
	}
	sort.Slice(idx, func(a, b int) bool { return less(&items[idx[a]], &items[idx[b]]) })
	if len(idx) <= max {
		return idx, "", nil
	}
	idx = idx[:max]
	last := items[idx[max-1]]
	t := pageToken{SortBy: q.sortBy, Order: q.sortOrder, Name: last.name}
	switch q.sortBy {
	case smapi.SortByCreationTime:
		t.Created = last.created.UnixNano()
	case smapi.SortByStatus:
		t.Status = last.status
	}
	b, _ := json.Marshal(t)
	return idx, base64.RawURLEncoding.EncodeToString(b), nil
}

func (h *Handler) listModels(ctx context.Context, in *smapi.ListModelsInput) (*smapi.ListModelsOutput, error) {
	q := listQuery{sortBy: in.SortBy, sortOrder: in.SortOrder, nextToken: in.NextToken, nameContains: in.NameContains,
		maxResults: in.MaxResults, createdBefore: in.CreationTimeBefore, createdAfter: in.CreationTimeAfter}
	if _, err := q.check(); err != nil {
		return nil, err
	}
	listed, err := records.ListAll[records.Model](ctx, h.cfg.Store, records.KindModel)
	if err != nil {
		return nil, err
	}
	all := listed.Records
	for _, c := range listed.Corrupt {
		h.log.Warn("list: corrupt record listed by its key's name", "key", c.Key, "error", c.Err)
		if names.Valid(c.Name) {
			all = append(all, &records.Model{Name: c.Name, ARN: h.arn(arnModel, c.Name)})
		}
	}
	items := make([]listItem, len(all))
	for i, m := range all {
		items[i] = listItem{name: m.Name, created: m.CreationTime}
	}
	idx, next, err := q.page(items)
	if err != nil {
		return nil, err
	}
	out := &smapi.ListModelsOutput{Models: []smapi.ModelSummary{}, NextToken: next}
	for _, i := range idx {
		m := all[i]
		out.Models = append(out.Models, smapi.ModelSummary{ModelName: m.Name, ModelArn: m.ARN, CreationTime: smapi.NewTime(m.CreationTime)})
	}
	return out, nil
}

func (h *Handler) listEndpointConfigs(ctx context.Context, in *smapi.ListEndpointConfigsInput) (*smapi.ListEndpointConfigsOutput, error) {
	q := listQuery{sortBy: in.SortBy, sortOrder: in.SortOrder, nextToken: in.NextToken, nameContains: in.NameContains,
		maxResults: in.MaxResults, createdBefore: in.CreationTimeBefore, createdAfter: in.CreationTimeAfter}
	if _, err := q.check(); err != nil {
		return nil, err
	}
	listed, err := records.ListAll[records.EndpointConfig](ctx, h.cfg.Store, records.KindEndpointConfig)
	if err != nil {
		return nil, err
	}
	all := listed.Records
	for _, c := range listed.Corrupt {
		h.log.Warn("list: corrupt record listed by its key's name", "key", c.Key, "error", c.Err)
		if names.Valid(c.Name) {
			all = append(all, &records.EndpointConfig{Name: c.Name, ARN: h.arn(arnEndpointConfig, c.Name)})
		}
	}
	items := make([]listItem, len(all))
	for i, c := range all {
		items[i] = listItem{name: c.Name, created: c.CreationTime}
	}
	idx, next, err := q.page(items)
	if err != nil {
		return nil, err
	}
	out := &smapi.ListEndpointConfigsOutput{EndpointConfigs: []smapi.EndpointConfigSummary{}, NextToken: next}
	for _, i := range idx {
		c := all[i]
		out.EndpointConfigs = append(out.EndpointConfigs, smapi.EndpointConfigSummary{EndpointConfigName: c.Name, EndpointConfigArn: c.ARN, CreationTime: smapi.NewTime(c.CreationTime)})
	}
	return out, nil
}

func (h *Handler) listEndpoints(ctx context.Context, in *smapi.ListEndpointsInput) (*smapi.ListEndpointsOutput, error) {
	q := listQuery{sortBy: in.SortBy, sortOrder: in.SortOrder, nextToken: in.NextToken, nameContains: in.NameContains,
		maxResults: in.MaxResults, createdBefore: in.CreationTimeBefore, createdAfter: in.CreationTimeAfter,
		modifiedBefore: in.LastModifiedTimeBefore, modifiedAfter: in.LastModifiedTimeAfter, status: in.StatusEquals, endpoints: true}
	if _, err := q.check(); err != nil {
		return nil, err
	}
	listed, err := records.ListAll[records.Endpoint](ctx, h.cfg.Store, records.KindEndpoint)
	if err != nil {
		return nil, err
	}
	// A corrupt record is listed Failed under the name its key spells
	// (when that is a name at all); it does not hide the others.
	all := listed.Records
	for _, c := range listed.Corrupt {
		if !names.Valid(c.Name) {
			h.log.Warn("list: corrupt endpoint record under a key that names no endpoint", "key", c.Key, "error", c.Err)
			continue
		}
		all = append(all, &records.Endpoint{Name: c.Name, ARN: h.arn(arnEndpoint, c.Name), Status: smapi.StatusFailed})
	}
	items := make([]listItem, len(all))
	for i, e := range all {
		items[i] = listItem{name: e.Name, created: e.CreationTime, modified: e.LastModifiedTime, status: e.Status}
	}
	idx, next, err := q.page(items)
	if err != nil {
		return nil, err
	}
	out := &smapi.ListEndpointsOutput{Endpoints: []smapi.EndpointSummary{}, NextToken: next}
	for _, i := range idx {
		e := all[i]
		out.Endpoints = append(out.Endpoints, smapi.EndpointSummary{
			EndpointName: e.Name, EndpointArn: e.ARN, CreationTime: smapi.NewTime(e.CreationTime),
			LastModifiedTime: smapi.NewTime(e.LastModifiedTime), EndpointStatus: e.Status,
		})
	}
	return out, nil
}
