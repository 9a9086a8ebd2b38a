package ui

// cursor is a selection inside a scrolling list: the selected index and the
// first visible row.
type cursor struct {
	idx, offset int
}

// clamp keeps the selection inside n rows and visible within height rows.
func (c *cursor) clamp(n, height int) {
	if height < 1 {
		height = 1
	}
	c.idx = max(0, min(c.idx, n-1))
	if c.idx < c.offset {
		c.offset = c.idx
	}
	if c.idx >= c.offset+height {
		c.offset = c.idx - height + 1
	}
	c.offset = max(0, min(c.offset, n-height))
}

// move shifts the selection by delta rows (clamped).
func (c *cursor) move(delta, n, height int) {
	c.idx += delta
	c.clamp(n, height)
}
