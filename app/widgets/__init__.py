"""The viewer's Qt widgets: image panels, class legend, 3D map view, statistics."""
