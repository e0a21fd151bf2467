"""ragloom.retrievers."""

from __future__ import annotations

from ragloom._lazy import lazy_getattr

# public name -> module that defines it (imported on first use, so importing stays light).
_LAZY: dict[str, str] = {
    "BM25Retriever": "ragloom.retrievers.bm25",
    "CachedEmbedder": "ragloom.retrievers.embeddings",
    "ChromaStore": "ragloom.retrievers.stores.chroma_store",
    "Chunker": "ragloom.retrievers.chunking",
    "CrossEncoderReranker": "ragloom.retrievers.rerank",
    "DEFAULT_RELEVANCE_PROMPT": "ragloom.retrievers.rerank",
    "DenseRetriever": "ragloom.retrievers.dense",
    "Document": "ragloom.retrievers.loaders",
    "FaissStore": "ragloom.retrievers.stores.faiss_store",
    "FixedCharChunker": "ragloom.retrievers.chunking",
    "FixedTokenChunker": "ragloom.retrievers.chunking",
    "HashEmbedder": "ragloom.retrievers.base",
    "HybridRetriever": "ragloom.retrievers.hybrid",
    "Index": "ragloom.retrievers.index",
    "LLMReranker": "ragloom.retrievers.rerank",
    "Reranker": "ragloom.retrievers.rerank",
    "RerankingRetriever": "ragloom.retrievers.rerank",
    "RetrievalSource": "ragloom.retrievers.sources",
    "Retriever": "ragloom.retrievers.base",
    "STORES": "ragloom.retrievers.index",
    "SUPPORTED_SUFFIXES": "ragloom.retrievers.loaders",
    "SemanticChunker": "ragloom.retrievers.chunking",
    "SentenceChunker": "ragloom.retrievers.chunking",
    "SentenceTransformerEmbedder": "ragloom.retrievers.embeddings",
    "VectorStore": "ragloom.retrievers.base",
    "build_index": "ragloom.retrievers.index",
    "check_embedder": "ragloom.retrievers.embeddings",
    "chunk_documents": "ragloom.retrievers.chunking",
    "default_embedder": "ragloom.retrievers.embeddings",
    "default_model_path": "ragloom.retrievers.embeddings",
    "describe_embedder": "ragloom.retrievers.embeddings",
    "load_documents": "ragloom.retrievers.loaders",
    "load_fast_tokenizer": "ragloom.retrievers.embeddings",
    "load_tokenizer": "ragloom.retrievers.embeddings",
    "make_chunker": "ragloom.retrievers.chunking",
    "matches_where": "ragloom.retrievers.base",
    "rebuild_embedder": "ragloom.retrievers.embeddings",
    "reciprocal_rank_fusion": "ragloom.retrievers.hybrid",
    "render_hits": "ragloom.retrievers.sources",
    "reorder": "ragloom.retrievers.rerank",
    "split_sentences": "ragloom.retrievers.chunking",
    "validate_where": "ragloom.retrievers.base",
}

__all__ = sorted(
    [
        *_LAZY,
    ]
)


__getattr__ = lazy_getattr(__name__, _LAZY)
