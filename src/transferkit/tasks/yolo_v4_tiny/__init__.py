"""YOLOv4-tiny: CSPDarknet-tiny (or any zoo backbone), two anchor heads, mosaic, NMS in the exported graph."""
