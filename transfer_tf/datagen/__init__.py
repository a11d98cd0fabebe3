"""Generated raw datasets in the real ImageNet and COCO on-disk layouts, for the demo, the tests
and the benchmarks: `shapes` (drawn shape x colour objects), `photos` (crops of real
photographs), both laid out by `raw_layouts`. Nothing in the data path imports this package."""
