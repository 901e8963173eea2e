// Golden-data helper, not part of elk or its tests: llama.cpp's own logits for given token ids (all
// positions in one batch, float32 KV cache, no flash attention, one thread), or llama.cpp's tokenization.
// Build against a llama.cpp checkout built with cmake (see make_gguf_golden.py):
//   g++ -O2 -std=c++17 -I$LLAMA/include -I$LLAMA/ggml/include llama_logits.cpp -L$BUILD/bin -lllama \
//       -lggml -lggml-base -lggml-cpu -Wl,-rpath,$BUILD/bin -o llama_logits
#include "llama.h"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: dump_logits model.gguf out.f32 id...\n       dump_logits model.gguf --tokenize text\n"); return 1; }
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.vocab_only = std::string(argv[2]) == "--tokenize";  // vocabulary-only GGUFs have no weights
    llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) return 1;
    const llama_vocab *vocab = llama_model_get_vocab(model);
    if (std::string(argv[2]) == "--tokenize") {
        std::vector<llama_token> t(8192);
        int n = llama_tokenize(vocab, argv[3], (int)strlen(argv[3]), t.data(), (int)t.size(), true, true);
        for (int i = 0; i < n; i++) printf("%d%c", t[i], i + 1 < n ? ' ' : '\n');
        return 0;
    }
    std::vector<llama_token> ids;
    for (int i = 3; i < argc; i++) ids.push_back(atoi(argv[i]));
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = ids.size() < 256 ? 256 : (uint32_t)ids.size();
    cp.n_batch = cp.n_ctx; cp.n_ubatch = cp.n_ctx;
    cp.type_k = GGML_TYPE_F32; cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.n_threads = 1; cp.n_threads_batch = 1;
    llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) return 2;
    llama_batch b = llama_batch_init((int)ids.size(), 0, 1);
    for (size_t i = 0; i < ids.size(); i++) {
        b.token[i] = ids[i]; b.pos[i] = (llama_pos)i; b.n_seq_id[i] = 1; b.seq_id[i][0] = 0; b.logits[i] = 1;
    }
    b.n_tokens = (int)ids.size();
    if (llama_decode(ctx, b)) return 3;
    int nv = llama_vocab_n_tokens(vocab);
    FILE *f = fopen(argv[2], "wb");
    for (size_t i = 0; i < ids.size(); i++) fwrite(llama_get_logits_ith(ctx, (int)i), 4, nv, f);
    fclose(f);
    llama_batch_free(b);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
