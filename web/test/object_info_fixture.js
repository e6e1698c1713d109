/** A small `/object_info` in ComfyUI's exact shape, for the unit tests. */
const req = (input, order, extra) => ({
  input: { required: input, ...(extra ?? {}) },
  input_order: { required: order ?? Object.keys(input) },
});

export const OBJECT_INFO = {
  CheckpointLoaderSimple: {
    ...req({ ckpt_name: [['a.safetensors', 'b.safetensors'], { tooltip: 'checkpoint' }] }),
    output: ['MODEL', 'CLIP', 'VAE'], output_is_list: [false, false, false],
    output_name: ['MODEL', 'CLIP', 'VAE'], name: 'CheckpointLoaderSimple',
    display_name: 'Load Checkpoint', description: 'Loads a checkpoint', category: 'loaders',
    output_node: false,
  },
  CLIPTextEncode: {
    ...req({ text: ['STRING', { multiline: true, dynamicPrompts: true }], clip: ['CLIP'] }),
    output: ['CONDITIONING'], output_is_list: [false], output_name: ['CONDITIONING'],
    name: 'CLIPTextEncode', display_name: 'CLIP Text Encode (Prompt)', description: '',
    category: 'conditioning', output_node: false,
  },
  EmptyLatentImage: {
    ...req({
      width: ['INT', { default: 512, min: 16, max: 16384, step: 8 }],
      height: ['INT', { default: 512, min: 16, max: 16384, step: 8 }],
      batch_size: ['INT', { default: 1, min: 1, max: 4096 }],
    }),
    output: ['LATENT'], output_is_list: [false], output_name: ['LATENT'],
    name: 'EmptyLatentImage', display_name: 'Empty Latent Image', description: '',
    category: 'latent', output_node: false,
  },
  KSampler: {
    ...req({
      model: ['MODEL'],
      seed: ['INT', { default: 0, min: 0, max: 0xffffffffffffffff, control_after_generate: true }],
      steps: ['INT', { default: 20, min: 1, max: 10000 }],
      cfg: ['FLOAT', { default: 8.0, min: 0, max: 100, step: 0.1, round: 0.01 }],
      sampler_name: [['euler', 'euler_ancestral'], {}],
      scheduler: [['normal', 'karras'], {}],
      positive: ['CONDITIONING'], negative: ['CONDITIONING'], latent_image: ['LATENT'],
      denoise: ['FLOAT', { default: 1.0, min: 0, max: 1, step: 0.01 }],
    }, ['model', 'seed', 'steps', 'cfg', 'sampler_name', 'scheduler', 'positive',
      'negative', 'latent_image', 'denoise']),
    output: ['LATENT'], output_is_list: [false], output_name: ['LATENT'],
    name: 'KSampler', display_name: 'KSampler', description: 'Denoises', category: 'sampling',
    output_node: false,
  },
  VAEDecode: {
    ...req({ samples: ['LATENT'], vae: ['VAE'] }),
    output: ['IMAGE'], output_is_list: [false], output_name: ['IMAGE'],
    name: 'VAEDecode', display_name: 'VAE Decode', description: '', category: 'latent',
    output_node: false,
  },
  SaveImage: {
    input: {
      required: { images: ['IMAGE'], filename_prefix: ['STRING', { default: 'ComfyUI' }] },
      hidden: { prompt: 'PROMPT', extra_pnginfo: 'EXTRA_PNGINFO' },
    },
    input_order: { required: ['images', 'filename_prefix'], hidden: ['prompt', 'extra_pnginfo'] },
    output: [], output_is_list: [], output_name: [], name: 'SaveImage',
    display_name: 'Save Image', description: '', category: 'image', output_node: true,
  },
  LoadImage: {
    ...req({ image: [['x.png'], { image_upload: true }] }),
    output: ['IMAGE', 'MASK'], output_is_list: [false, false], output_name: ['IMAGE', 'MASK'],
    name: 'LoadImage', display_name: 'Load Image', description: '', category: 'image',
    output_node: false,
  },
  ImageScale: {
    ...req({ image: ['IMAGE'], upscale_method: [['nearest-exact', 'bilinear'], {}],
      width: ['INT', { default: 512 }], height: ['INT', { default: 512 }],
      crop: [['disabled', 'center'], {}] }),
    output: ['IMAGE'], output_is_list: [false], output_name: ['IMAGE'],
    name: 'ImageScale', display_name: 'Upscale Image', description: '',
    category: 'image/upscaling', output_node: false,
  },
};
