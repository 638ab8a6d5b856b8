package disclosure

import (
	"encoding/json"
	"fmt"
	"reflect"
)

// Released is an outgoing payload that passed the disclosure layer: its
// exact JSON bytes. Only Seal makes one; the zero Released encodes as JSON
// null. Code that sends a payload out of the trust takes a Released, so a
// payload that did not pass the layer does not compile into a send.
type Released struct {
	body []byte
}

var cellType = reflect.TypeFor[Cell]()

// Seal checks that v carries no raw integer count and returns its JSON
// encoding as a Released payload. Counts must be Cells (made by a Policy);
// integers anywhere else in v — struct fields, slice, array and map
// elements, values behind interfaces and pointers — are refused with the
// path of the first one found. Floating-point values (measurements such as
// a loss) and strings pass: they are not counts, and channels that carry
// counts as floats filter them through Policy.Cell before sealing.
func Seal(v any) (Released, error) {
	if err := walk(reflect.ValueOf(v), "$"); err != nil {
		return Released{}, err
	}
	body, err := json.Marshal(v)
	if err != nil {
		return Released{}, fmt.Errorf("seal payload: %w", err)
	}
	return Released{body: body}, nil
}

// MustSeal is Seal for payloads whose types are fixed at compile time and
// hold no integers; it panics if v does.
func MustSeal(v any) Released {
	r, err := Seal(v)
	if err != nil {
		panic(err)
	}
	return r
}

// Bytes returns a copy of the payload's JSON.
func (r Released) Bytes() []byte {
	if r.body == nil {
		return []byte("null")
	}
	return append([]byte(nil), r.body...)
}

// MarshalJSON returns the sealed bytes, so a handler can return a Released
// to a JSON writer.
func (r Released) MarshalJSON() ([]byte, error) { return r.Bytes(), nil }

func walk(v reflect.Value, path string) error {
	if !v.IsValid() {
		return nil
	}
	if v.Type() == cellType {
		return nil
	}
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return fmt.Errorf("seal payload: %s is a raw %s count; release it as a disclosure.Cell", path, v.Type())
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return walk(v.Elem(), path)
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() || f.Tag.Get("json") == "-" {
				continue
			}
			if err := walk(v.Field(i), path+"."+f.Name); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return fmt.Errorf("seal payload: %s is raw bytes; decode it into typed values first", path)
		}
		for i := range v.Len() {
			if err := walk(v.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		it := v.MapRange()
		for it.Next() {
			if err := walk(it.Value(), fmt.Sprintf("%s[%v]", path, it.Key())); err != nil {
				return err
			}
		}
	case reflect.Chan, reflect.Func, reflect.Complex64, reflect.Complex128, reflect.UnsafePointer:
		return fmt.Errorf("seal payload: %s has unsupported kind %s", path, v.Kind())
	}
	return nil
}
