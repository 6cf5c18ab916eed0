"""Visual fashion search, by stage of the data flow:

- the shared core: `config` (the settings an index is built with), `images` (any photo to model input, bounded),
  `embedder` (ResNet50 to L2-normalised vectors), `columns` (which catalog column holds what), `index` (the index's
  files, its vector search and its generations);
- `pipeline`: the offline build, catalog -> embedded rows -> index folder -> the Hub;
- `serve`: the app, a photo -> its vector -> the nearest products, through the page, the API and MCP.

Each package lists its public names in `__all__`.
"""
