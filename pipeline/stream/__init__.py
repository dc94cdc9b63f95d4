"""The streaming layer: the only package that imports faust and aiokafka."""
