"""Operations: the local broker, topic creation, the demo, and produce/tail for people at a terminal."""
